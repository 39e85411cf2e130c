package webconsole_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/artifacts"
	"github.com/edgekit/edgekit/edge/fleet/webconsole"
)

// multipartPost posts fields (and a file when name is given) as the
// version form does, with the CSRF token in the form's address and, when
// script is set, in the header as the page's script sends it.
func (b *browser) multipartPost(path, csrf string, fields map[string]string, file string, data []byte, script bool) (*http.Response, string) {
	b.s.t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	for k, v := range fields {
		_ = w.WriteField(k, v)
	}
	if file != "" {
		fw, _ := w.CreateFormFile("package", file)
		_, _ = fw.Write(data)
	}
	_ = w.Close()
	req, _ := http.NewRequest("POST", b.s.url+path+"?csrf="+url.QueryEscape(csrf), &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	if script {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.s.t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(out)
}

// TestVersionForm: a container version names its image; a function
// version's package is uploaded into the artifact store, signed as the
// store's keys require, and named by its digest; a wrong signature, an
// oversize package and a package for a container app are refused with
// why, and add nothing.
func TestVersionForm(t *testing.T) {
	ctx := context.Background()
	pub, key, _ := ed25519.GenerateKey(nil)
	arts, err := artifacts.Open(t.TempDir(), &artifacts.Options{Keys: []ed25519.PublicKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	s := newSite(t, &webconsole.Options{Artifacts: arts, ArtifactBase: "http://fleet.example:7700", MaxUpload: 1 << 20}, false)
	for _, a := range []fleet.App{{Name: "web", Kind: app.KindContainer}, {Name: "alarm", Kind: app.KindFunction}} {
		if _, err := s.f.CreateApp(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	b := s.browser().operator()
	csrf := b.csrf("/ui/apps/web")

	resp, _ := b.multipartPost("/ui/apps/web/versions", csrf, map[string]string{"version": "1", "image": "localhost/web:1",
		"container": `{"spec": {"command": ["/web"]}}`, "config": `{"port": 8080}`, "probation": "2s"}, "", nil, false)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the container version: %s", resp.Status)
	}
	vs, _ := s.f.Versions(ctx, "web")
	if len(vs) != 1 || vs[0].Version.Container == nil || vs[0].Version.Container.Image != "localhost/web:1" || vs[0].Version.Container.Spec.Command[0] != "/web" {
		t.Errorf("the container version: %+v", vs)
	}

	pkg := []byte("a function's package, as console pack makes it")
	digest := sha256.Sum256(pkg)
	sig := hex.EncodeToString(ed25519.Sign(key, digest[:]))
	resp, body := b.multipartPost("/ui/apps/alarm/versions", csrf, map[string]string{"version": "1", "signature": sig, "triggers": `[{"name": "every", "type": "timer", "params": {"every": "1m"}}]`},
		"alarm-1.tar.gz", pkg, true)
	var answer map[string]string
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &answer) != nil || answer["location"] != "/ui/apps/alarm" || !strings.Contains(answer["message"], "Version 1 of alarm added") {
		t.Fatalf("the function version, from the script: %s %s", resp.Status, body)
	}
	vs, _ = s.f.Versions(ctx, "alarm")
	if len(vs) != 1 || vs[0].Version.Function == nil {
		t.Fatalf("the function version: %+v", vs)
	}
	got := vs[0].Version.Function.Package
	if got.SHA256 != hex.EncodeToString(digest[:]) || got.URL != "http://fleet.example:7700/blobs/sha256/"+got.SHA256 || got.Size != int64(len(pkg)) || len(got.Signature) == 0 {
		t.Errorf("the package: %+v", got)
	}
	if len(vs[0].Version.Function.Triggers) != 1 {
		t.Errorf("the triggers: %+v", vs[0].Version.Function.Triggers)
	}

	for name, c := range map[string]struct {
		app, version, sig string
		data              []byte
		want              string
	}{
		"a wrong signature":   {"alarm", "2", hex.EncodeToString(ed25519.Sign(key, []byte("something else"))), pkg, "signature"},
		"no signature":        {"alarm", "3", "", pkg, "signature"},
		"an oversize package": {"alarm", "4", sig, bytes.Repeat([]byte("x"), 1<<20+1), "over"},
		"a container package": {"web", "2", sig, pkg, "container"},
	} {
		resp, body := b.multipartPost("/ui/apps/"+c.app+"/versions", csrf, map[string]string{"version": c.version, "signature": c.sig}, "p.tar.gz", c.data, true)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%s: %s %q, want 400 naming %q", name, resp.Status, body, c.want)
		}
		if _, err := s.f.Versions(ctx, c.app); err != nil {
			t.Fatal(err)
		}
	}
	if vs, _ := s.f.Versions(ctx, "alarm"); len(vs) != 1 {
		t.Errorf("refused forms added versions: %+v", vs)
	}
	// The form's CSRF token only in the header, or in neither place.
	if resp, _ := b.multipartPost("/ui/apps/alarm/versions", "not-the-token", map[string]string{"version": "5"}, "", nil, false); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a version form with a wrong CSRF token: %s", resp.Status)
	}
}

// TestDeploymentCommands: pause (with the reason shown), resume, cancel,
// and cancel with rollback, each from the page's forms; a command the
// deployment's state does not allow is refused with why.
func TestDeploymentCommands(t *testing.T) {
	ctx := context.Background()
	s := newSite(t, nil, false)
	if _, err := s.f.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.AddVersion(ctx, "alarm", app.Version{Version: "1", Function: &app.FunctionVersion{
		Package: app.Artifact{URL: "https://packages.example.com/a.tgz", SHA256: strings.Repeat("ab", 32)}}}); err != nil {
		t.Fatal(err)
	}
	// Gateways that never answer keep the deployments running; each its
	// own, so that neither supersedes the other.
	b := s.browser().operator()
	csrf := b.csrf("/ui/deployments")
	for i, id := range []string{"d1", "d2"} {
		if _, err := s.f.RegisterInstance(ctx, fmt.Sprintf("gw-%d", i), map[string]string{"site": id}); err != nil {
			t.Fatal(err)
		}
		if resp, body := b.post("/ui/deployments", url.Values{"id": {id}, "apps": {"alarm=1"}, "selector": {"site=" + id}, "csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("deploy %s: %s %s", id, resp.Status, body)
		}
	}
	state := func(id string) (fleet.DeploymentState, string) {
		d, _, err := s.f.Deployment(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.State, d.Reason
	}
	for _, c := range []struct {
		id, command string
		want        fleet.DeploymentState
	}{
		{"d1", "pause", fleet.DeploymentPaused},
		{"d1", "resume", fleet.DeploymentRunning},
		{"d1", "cancel", fleet.DeploymentCancelled},
		{"d2", "rollback", fleet.DeploymentAborted},
	} {
		resp, _ := b.post("/ui/deployments/"+c.id+"/"+c.command, url.Values{"csrf": {csrf}, "reason": {"checking <the> first gateway"}})
		if got, _ := state(c.id); resp.StatusCode != http.StatusSeeOther || got != c.want {
			t.Errorf("%s %s: %s, state %s, want %s", c.command, c.id, resp.Status, got, c.want)
		}
		if c.command == "pause" {
			if _, reason := state(c.id); !strings.Contains(reason, "checking <the> first gateway") {
				t.Errorf("the pause's reason: %q", reason)
			}
			if _, page := b.get("/ui/deployments/d1"); !strings.Contains(page, "checking &lt;the&gt; first gateway") {
				t.Error("the deployment's page does not show the pause's reason")
			}
		}
	}
	resp, _ := b.post("/ui/deployments/d1/pause", url.Values{"csrf": {csrf}})
	_, page := b.get(resp.Header.Get("Location"))
	if !strings.Contains(page, "deployment d1 is cancelled") || !strings.Contains(page, `role="alert"`) {
		t.Errorf("pausing a cancelled deployment: the page does not say why it was refused")
	}
	if resp, _ := b.post("/ui/deployments/d1/explode", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("an unknown command: %s", resp.Status)
	}
	es, _ := s.f.AuditDay(ctx, s.f.Now())
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Action+" "+e.Object)
	}
	for _, want := range []string{"deploy d1", "pause d1", "resume d1", "cancel d1", "rollback d2", "explode d1"} {
		if !strings.Contains(strings.Join(actions, "\n"), want) {
			t.Errorf("the audit log lacks %q", want)
		}
	}
}
