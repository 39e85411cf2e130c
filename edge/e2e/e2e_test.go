package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/podman"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/podmantest"
	"github.com/edgekit/edgekit/internal/testenv"
)

const image = "localhost/edgekit-testprog:1"

// privatePodman starts a private podman service with the test program's
// image, and a runtime on it.
func privatePodman(t *testing.T) (*podmantest.Service, *podman.Runtime) {
	t.Helper()
	svc := podmantest.Start(t)
	rt, err := podman.Connect(context.Background(), svc.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.ImportImage(context.Background(), image, bytes.NewReader(podmantest.TestProgramTar(t))); err != nil {
		t.Fatal(err)
	}
	return svc, rt
}

// artifacts serves packages over HTTP; a path in hold waits until it is
// released.
type artifacts struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hold  map[string]chan struct{}
}

func newArtifacts(t *testing.T) *artifacts {
	a := &artifacts{files: map[string][]byte{}, hold: map[string]chan struct{}{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		b, ok := a.files[r.URL.Path]
		h := a.hold[r.URL.Path]
		a.mu.Unlock()
		if h != nil {
			select {
			case <-h:
			case <-r.Context().Done():
				return
			}
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(a.Close)
	return a
}

// publish packs files (name → content; the manifest first) and serves the
// package.
func (a *artifacts) publish(t *testing.T, path string, files [][2]string, modes map[string]int64) app.Artifact {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		mode := int64(0o644)
		if m, ok := modes[f[0]]; ok {
			mode = m
		}
		if err := tw.WriteHeader(&tar.Header{Name: f[0], Mode: mode, Size: int64(len(f[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(f[1]))
	}
	tw.Close()
	zw.Close()
	a.mu.Lock()
	a.files[path] = buf.Bytes()
	a.mu.Unlock()
	sum := sha256.Sum256(buf.Bytes())
	return app.Artifact{URL: a.URL + path, Size: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:])}
}

// versionFn builds the Go test function (internal/versionfn) in dir and
// returns its binary.
func versionFn(t *testing.T, dir string) []byte {
	t.Helper()
	bin := filepath.Join(dir, "bootstrap")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "./internal/versionfn").CombinedOutput(); err != nil {
		t.Fatalf("building the Go function: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// statuses collects the status documents the gateway publishes upstream.
type statuses struct {
	mu  sync.Mutex
	all []app.Status
}

func (s *statuses) handle(_ context.Context, m *bus.Message) {
	var st app.Status
	if json.Unmarshal(m.Payload, &st) == nil {
		s.mu.Lock()
		s.all = append(s.all, st)
		s.mu.Unlock()
	}
}

// await waits until the status upstream says revision rev has an outcome.
func (s *statuses) await(t *testing.T, rev uint64) app.Status {
	t.Helper()
	var out app.Status
	testenv.Eventually(t, fmt.Sprintf("revision %d's outcome upstream", rev), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, st := range s.all {
			if st.Revision == rev && st.Outcome != app.OutcomeInProgress {
				out = st
				return true
			}
		}
		return false
	})
	return out
}

func (s *statuses) saw(rev uint64, o app.Outcome) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.all {
		if st.Revision == rev && st.Outcome == o {
			return true
		}
	}
	return false
}

// TestEndToEnd: on a real Mosquitto as the upstream broker and a real
// podman, a deployment with an aws-lambda-go package served over HTTP, a
// Node.js function on a message trigger and a container app runs; v2 of
// the Go function swaps in while a load generator calls it, every call
// answered; v3, which crashes at start, and a container version that
// never becomes healthy are each rolled back and reported failed with the
// reason; a revision published while another is in progress supersedes
// it. The container runs unprivileged.
func TestEndToEnd(t *testing.T) {
	testenv.Tool(t, "node")
	ctx := context.Background()
	svc, rt := privatePodman(t)
	upstream := brokertest.Start(t, nil)
	cloud := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "fleet"})
	ups := &statuses{}
	if _, err := cloud.Subscribe(ctx, edge.StatusTopic("gw-e2e"), ups.handle, nil); err != nil {
		t.Fatal(err)
	}
	alarms := make(chan *bus.Message, 10)
	if _, err := cloud.Subscribe(ctx, edge.TopicPrefix("gw-e2e")+"outputs/#", func(_ context.Context, m *bus.Message) { alarms <- m }, nil); err != nil {
		t.Fatal(err)
	}

	// The packages: the Go function built here, the Node.js example's code.
	dir := t.TempDir()
	bootstrap := versionFn(t, dir)
	nodeCode, err := os.ReadFile("../../examples/function-node/index.js")
	if err != nil {
		t.Fatal(err)
	}
	arts := newArtifacts(t)
	goPkg := func(version, env string) app.Artifact {
		manifest := `{"name":"hello-go","version":"` + version + `","runtime":"executable","handler":"bootstrap"` + env + `}`
		return arts.publish(t, "/hello-go-"+version+".tgz", [][2]string{{"function.json", manifest}, {"bootstrap", string(bootstrap)}}, map[string]int64{"bootstrap": 0o755})
	}
	goApp := func(version string, art app.Artifact) app.Assignment {
		return app.Assignment{App: app.App{Name: "hello-go", Kind: app.KindFunction},
			Version: app.Version{Version: version, Function: &app.FunctionVersion{Package: art}, Probation: app.Duration(time.Second)}}
	}
	nodeApp := app.Assignment{App: app.App{Name: "alarm-node", Kind: app.KindFunction}, Version: app.Version{Version: "1",
		Function: &app.FunctionVersion{
			Package: arts.publish(t, "/alarm-node-1.tgz", [][2]string{
				{"function.json", `{"name":"alarm-node","version":"1","runtime":"nodejs","handler":"index.handler"}`},
				{"index.js", string(nodeCode)}}, nil),
			Triggers: []app.Trigger{{Name: "telemetry", Type: "message", Params: json.RawMessage(`{"filter": "devices/+/telemetry", "output": "outputs/alarms"}`)}},
		},
		Config: json.RawMessage(`{"threshold": 80}`), Probation: app.Duration(time.Second)}}
	webApp := func(version string, health []string) app.Assignment {
		return app.Assignment{App: app.App{Name: "web", Kind: app.KindContainer}, Version: app.Version{Version: version,
			Container: &app.ContainerVersion{Image: image, Spec: app.ContainerSpec{Command: []string{"/testprog"}, NetworkMode: "none",
				Env: map[string]string{"VERSION": version}, StopGrace: app.Duration(time.Second)},
				Health: &app.Probe{Exec: health, Interval: app.Duration(200 * time.Millisecond)}},
			Probation: app.Duration(3 * time.Second)}}
	}
	healthy := []string{"/testprog", "echo", "ok"}

	g, _ := gatewaytest.Run(t, &edge.Options{
		DataDir: filepath.Join(dir, "data"), Instance: "gw-e2e", DeploymentFile: "-",
		Upstream:         &mqttbus.Options{Brokers: []string{upstream.URL().String()}},
		ContainerRuntime: rt, API: &edge.APIOptions{Address: "127.0.0.1:0"},
		Containers: &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: time.Second},
	})
	token, _ := os.ReadFile(filepath.Join(dir, "data", "api-token"))
	invoke := func() (string, error) {
		req, _ := http.NewRequest("POST", g.APIURL()+"/v1/functions/hello-go/invoke", strings.NewReader(`{"n":1}`))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v struct{ Version string }
		if resp.StatusCode != 200 || json.Unmarshal(b, &v) != nil || v.Version == "" {
			return "", fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		return v.Version, nil
	}
	deploy := func(rev uint64, apps ...app.Assignment) {
		t.Helper()
		b, _ := json.Marshal(&app.Deployment{Schema: 1, ID: fmt.Sprintf("e2e-%d", rev), Revision: rev, Apps: apps})
		if err := cloud.Publish(ctx, &bus.Message{Topic: edge.DesiredTopic("gw-e2e"), Payload: b, QoS: bus.AtLeastOnce, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}

	// Revision 1: everything runs.
	v1 := goApp("1", goPkg("1", ""))
	deploy(1, v1, nodeApp, webApp("1", healthy))
	if st := ups.await(t, 1); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("revision 1: %+v", st)
	}
	if v, err := invoke(); err != nil || v != "1" {
		t.Errorf("hello-go: %q %v", v, err)
	}
	if err := g.Bus().Publish(ctx, &bus.Message{Topic: "devices/boiler/telemetry", Payload: []byte(`{"device":"boiler","temperature":95}`), QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-alarms:
		if !strings.Contains(string(m.Payload), `"alarm":true`) {
			t.Errorf("the Node.js rule's output upstream: %s", m.Payload)
		}
	case <-time.After(30 * time.Second):
		t.Error("no output of the Node.js rule upstream")
	}
	web := func() container.AppStatus {
		for _, s := range g.Containers().Status() {
			if s.Name == "web" {
				return s
			}
		}
		return container.AppStatus{}
	}
	if s := web(); s.State != container.AppRunning || s.Version != "1" {
		t.Errorf("web: %+v", s)
	}
	out, err := exec.Command("podman", "--url", svc.URL, "container", "inspect", "--format", "{{.HostConfig.Privileged}} {{.HostConfig.CapAdd}}", web().ContainerID).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "false []" {
		t.Errorf("web's privileges: %q %v, want not privileged, no capability added", out, err)
	}

	// Revision 2 swaps hello-go while it is called without pause.
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var seen sync.Map
	var load sync.WaitGroup
	for range 2 {
		load.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := invoke()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Logf("a call during the swap: %v", err)
					continue
				}
				seen.Store(v, true)
			}
		})
	}
	v2 := goApp("2", goPkg("2", ""))
	deploy(2, v2, nodeApp, webApp("1", healthy))
	st := ups.await(t, 2)
	close(stop)
	load.Wait()
	if st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("revision 2: %+v", st)
	}
	_, had1 := seen.Load("1")
	_, had2 := seen.Load("2")
	if failures.Load() != 0 || !had1 || !had2 {
		t.Errorf("during the swap: %d calls, %d failed, versions 1 %v and 2 %v answered", calls.Load(), failures.Load(), had1, had2)
	}
	t.Logf("%d calls during the swap, every one answered", calls.Load())

	// Revision 3 crashes at start: rolled back, v2 serves.
	deploy(3, goApp("3", goPkg("3", `,"env":{"CRASH":"1"}`)), nodeApp, webApp("1", healthy))
	if st := ups.await(t, 3); st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeStart {
		t.Errorf("revision 3: %+v", st)
	}
	if v, err := invoke(); err != nil || v != "2" {
		t.Errorf("after revision 3: %q %v", v, err)
	}

	// Revision 4: web version 2 never passes its probe.
	deploy(4, v2, nodeApp, webApp("2", []string{"/testprog", "exit", "1"}))
	if st := ups.await(t, 4); st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeUnhealthy {
		t.Errorf("revision 4: %+v", st)
	}
	testenv.Eventually(t, "web back on version 1", func() bool { s := web(); return s.Version == "1" && s.State == container.AppRunning })
	var webs []container.Container
	testenv.Eventually(t, "one container of web, the failed version's removed", func() bool {
		webs, _ = rt.List(ctx, map[string]string{container.LabelApp: "web"})
		return len(webs) == 1
	})
	if webs[0].Labels[container.LabelVersion] != "1" {
		t.Errorf("web's container after the rollback: %+v", webs[0])
	}

	// Revision 5 waits for its package; revision 6 supersedes it.
	arts.mu.Lock()
	arts.hold["/hello-go-5.tgz"] = make(chan struct{})
	arts.mu.Unlock()
	deploy(5, goApp("5", goPkg("5", "")), nodeApp, webApp("1", healthy))
	testenv.Eventually(t, "revision 5 in progress", func() bool { return ups.saw(5, app.OutcomeInProgress) })
	deploy(6, goApp("6", goPkg("6", "")), nodeApp, webApp("1", healthy))
	if st := ups.await(t, 6); st.Outcome != app.OutcomeSucceeded {
		t.Errorf("revision 6: %+v", st)
	}
	if !ups.saw(5, app.OutcomeSuperseded) {
		t.Error("revision 5 was not reported superseded")
	}
	close(arts.hold["/hello-go-5.tgz"])
	if v, err := invoke(); err != nil || v != "6" {
		t.Errorf("after revision 6: %q %v", v, err)
	}
}
