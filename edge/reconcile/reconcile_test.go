package reconcile_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/memruntime"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/timer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const image = "localhost/edgekit-test:1"

// server serves artifacts by path, and can hold or break a transfer.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	hold   chan struct{} // when set, requests wait for it to close
	breaks int           // the next requests send half the file and break
	ranges []string      // the Range header of each request
}

func newServer(t *testing.T) *server {
	s := &server{files: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	b, ok := s.files[r.URL.Path]
	hold, breaking := s.hold, s.breaks > 0
	if breaking {
		s.breaks--
	}
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	if breaking {
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		_, _ = w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// publish puts archive on the server and returns what a version says of it.
func (s *server) publish(path string, archive []byte) app.Artifact {
	s.mu.Lock()
	s.files[path] = archive
	s.mu.Unlock()
	sum := sha256.Sum256(archive)
	return app.Artifact{URL: s.URL + path, Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}
}

// pyPackage is a Python function package whose handler returns its
// version and configuration; code is added to its module.
func pyPackage(t testing.TB, name, version, code string) []byte {
	return pyPackageWith(t, name, version, code, "")
}

// pyPackageWith is pyPackage with more fields in its manifest.
func pyPackageWith(t testing.TB, name, version, code, manifest string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range [][2]string{
		{"function.json", `{"name":"` + name + `","version":"` + version + `","runtime":"python","handler":"main.handler"` + manifest + `}`},
		{"main.py", "import os, json\n" + code + "\n" +
			"def handler(event, context):\n    return {'version': '" + version + "', 'config': json.loads(os.environ.get('EDGEKIT_FUNCTION_CONFIG') or 'null')}\n"},
	} {
		file, body := f[0], f[1]
		if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// rig is a gateway's parts and a reconciler over them, with a fresh
// function host and trigger set at each start, as after a reboot, and
// the same state, packages and containers throughout.
type rig struct {
	t    testing.TB
	dir  string
	rt   *memruntime.Runtime
	bus  *membus.Bus
	opts func(*reconcile.Options)
	key  ed25519.PublicKey // packages must be signed with it, when set

	host *function.Host
	set  *trigger.Set
	mgr  *container.Manager
	st   *state.Store
	rec  *reconcile.Reconciler
	stop func()

	mu       sync.Mutex
	statuses []app.Status
}

func newRig(t testing.TB, opts func(*reconcile.Options)) *rig { return newRigWith(t, nil, opts) }

// newRigWith is newRig whose package store requires signatures by key,
// when one is given.
func newRigWith(t testing.TB, key ed25519.PublicKey, opts func(*reconcile.Options)) *rig {
	testenv.Tool(t, "python3")
	r := &rig{t: t, dir: t.TempDir(), rt: memruntime.New(nil), bus: membus.New(nil), opts: opts, key: key}
	if err := r.rt.ImportImage(context.Background(), image, strings.NewReader("rootfs")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.shutdown()
		_ = r.bus.Close(context.Background())
		_ = r.rt.Close(context.Background())
	})
	r.start()
	return r
}

// start makes the parts and runs the reconciler.
func (r *rig) start() {
	t := r.t
	var err error
	if r.host, err = function.New(&function.Options{DataDir: filepath.Join(r.dir, "functions")}); err != nil {
		t.Fatal(err)
	}
	sched, err := timer.NewScheduler(nil)
	if err != nil {
		t.Fatal(err)
	}
	r.set = trigger.NewSet(r.host, map[string]trigger.Factory{timer.Type: sched.Factory(), message.Type: message.Factory(r.bus, nil)}, nil)
	r.mgr = container.NewManager(r.rt, &container.ManagerOptions{RestartMin: 10 * time.Millisecond, RestartMax: 50 * time.Millisecond})
	if r.st, err = state.Open(filepath.Join(r.dir, "state.db"), nil); err != nil {
		t.Fatal(err)
	}
	pkgs, err := codepkg.Open(filepath.Join(r.dir, "packages"), &codepkg.Options{PublicKey: r.key})
	if err != nil {
		t.Fatal(err)
	}
	o := reconcile.Options{
		Instance: "gw-1", Functions: r.host, Triggers: r.set, Containers: r.mgr, Packages: pkgs, State: r.st,
		Dir: filepath.Join(r.dir, "reconcile"), Probation: 200 * time.Millisecond, RetryMin: 10 * time.Millisecond,
		OnStatus: func(s app.Status) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.statuses = append(r.statuses, s)
		},
	}
	if r.opts != nil {
		r.opts(&o)
	}
	if r.rec, err = reconcile.New(&o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.rec.Run(ctx) }()
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		ctx := context.Background()
		_ = r.set.Close(ctx)
		_ = sched.Close(ctx)
		_ = r.host.Close(ctx)
		_ = r.mgr.Close(ctx)
		_ = r.st.Close(ctx)
	}
}

func (r *rig) shutdown() {
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
}

// submit submits d and waits until its revision has an outcome other than
// in progress, which it returns.
func (r *rig) submit(d *app.Deployment) app.Status {
	r.t.Helper()
	if err := r.rec.Submit(d); err != nil {
		r.t.Fatalf("Submit revision %d: %v", d.Revision, err)
	}
	return r.await(d.Revision)
}

func (r *rig) await(rev uint64) app.Status {
	r.t.Helper()
	var st app.Status
	testenv.Eventually(r.t, fmt.Sprintf("revision %d done", rev), func() bool {
		st = r.rec.Status()
		return st.Revision == rev && st.Outcome != app.OutcomeInProgress
	})
	return st
}

// invoke calls the function and returns the version that answered.
func (r *rig) invoke(name string) (version string, config map[string]any) {
	r.t.Helper()
	resp, err := r.host.Invoke(context.Background(), name, invoke.Request{Payload: []byte(`{}`)})
	if err != nil {
		r.t.Fatalf("invoking %s: %v", name, err)
	}
	var out struct {
		Version string
		Config  map[string]any
	}
	if err := json.Unmarshal(resp.Payload, &out); err != nil {
		r.t.Fatalf("%s answered %s", name, resp.Payload)
	}
	return out.Version, out.Config
}

func (r *rig) container(name string) container.AppStatus {
	for _, s := range r.mgr.Status() {
		if s.Name == name {
			return s
		}
	}
	return container.AppStatus{}
}

func fnApp(name, version string, art app.Artifact, triggers ...app.Trigger) app.Assignment {
	return app.Assignment{App: app.App{Name: name, Kind: app.KindFunction},
		Version: app.Version{Version: version, Function: &app.FunctionVersion{Package: art, Triggers: triggers}}}
}

func ctrApp(name, version string, env map[string]string) app.Assignment {
	return app.Assignment{App: app.App{Name: name, Kind: app.KindContainer},
		Version: app.Version{Version: version, Container: &app.ContainerVersion{Image: image, Spec: app.ContainerSpec{Env: env}}}}
}

func dep(rev uint64, apps ...app.Assignment) *app.Deployment {
	return &app.Deployment{Schema: app.SchemaVersion, ID: fmt.Sprintf("d%d", rev), Revision: rev, Apps: apps}
}

func appStatus(st app.Status, name string) app.AppStatus {
	for _, a := range st.Apps {
		if a.App == name {
			return a
		}
	}
	return app.AppStatus{}
}

func triggerNames(s *trigger.Set) []string {
	var out []string
	for _, c := range s.List() {
		out = append(out, c.Name)
	}
	return out
}

var tick = app.Trigger{Name: "tick", Type: timer.Type, Params: json.RawMessage(`{"every": "1h"}`)}

// TestDeployUpgradeRollback: a deployment of a function (on a trigger) and
// a container runs; a new function version swaps in and the old package
// goes; a version that crashes at start, a container version that never
// becomes healthy, and a package whose digest does not match are each
// rolled back, reported with the reason, while the last good ones serve.
func TestDeployUpgradeRollback(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, nil)
	v1 := srv.publish("/fn/1.tgz", pyPackage(t, "fn", "1", ""))
	fn1 := fnApp("fn", "1", v1, tick)
	fn1.Version.Config = json.RawMessage(`{"threshold": 80}`)
	fn1.Config.Overrides = json.RawMessage(`{"threshold": 85}`)
	web1 := ctrApp("web", "1", nil)
	st := r.submit(dep(1, fn1, web1))
	if st.Outcome != app.OutcomeSucceeded || st.Running == nil || st.Running.Revision != 1 {
		t.Fatalf("first deployment: %+v", st)
	}
	if v, cfg := r.invoke("fn"); v != "1" || cfg["threshold"] != 85.0 {
		t.Errorf("fn answered version %s with %v", v, cfg)
	}
	if got := triggerNames(r.set); len(got) != 1 || got[0] != "fn.tick" {
		t.Errorf("triggers: %v", got)
	}
	if c := r.container("web"); c.State != container.AppRunning || c.Version != "1" {
		t.Errorf("web: %+v", c)
	}

	v2 := srv.publish("/fn/2.tgz", pyPackage(t, "fn", "2", ""))
	fn2 := fnApp("fn", "2", v2, tick)
	st = r.submit(dep(2, fn2, web1))
	if st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("v2: %+v", st)
	}
	if v, _ := r.invoke("fn"); v != "2" {
		t.Errorf("after v2, version %s answered", v)
	}
	if in, _ := r.st.ListInstalled(); len(in) != 2 { // fn 2 and web 1
		t.Errorf("installed after the commit: %+v", in)
	}

	// v3 raises at import: its deploy fails and v2 serves on.
	v3 := srv.publish("/fn/3.tgz", pyPackage(t, "fn", "3", "raise RuntimeError('no config store')"))
	st = r.submit(dep(3, fnApp("fn", "3", v3, tick), web1))
	if st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeStart || !strings.Contains(st.Reason, "no config store") {
		t.Errorf("v3: %+v", st)
	}
	if a := appStatus(st, "fn"); a.Phase != app.PhaseRolledBack || a.RolledBackFrom != "3" || a.Version != "2" || a.Code != app.CodeStart {
		t.Errorf("fn after v3: %+v", a)
	}
	if v, _ := r.invoke("fn"); v != "2" {
		t.Errorf("after v3's rollback, version %s answered", v)
	}

	// web v2 never passes its probe: the manager and the reconciler give
	// it up; v1 runs.
	web2 := ctrApp("web", "2", map[string]string{"NEW": "1"})
	web2.Version.Container.Health = &app.Probe{TCP: "127.0.0.1:1", Interval: app.Duration(20 * time.Millisecond)}
	web2.Version.Probation = app.Duration(300 * time.Millisecond)
	st = r.submit(dep(4, fn2, web2))
	if st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeUnhealthy {
		t.Errorf("web v2: %+v", st)
	}
	testenv.Eventually(t, "web back on version 1", func() bool {
		c := r.container("web")
		return c.Version == "1" && c.State == container.AppRunning
	})

	// v5 runs continuously and keeps exiting soon after it starts: a crash
	// loop within its probation.
	v5 := srv.publish("/fn/5.tgz", pyPackageWith(t, "fn", "5", "import threading\nthreading.Timer(0.3, lambda: os._exit(3)).start()", `,"mode":"continuous"`))
	loop := fnApp("fn", "5", v5, tick)
	loop.Version.Probation = app.Duration(20 * time.Second)
	st = r.submit(dep(5, loop, web1))
	if st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeCrashLoop {
		t.Errorf("a crash-looping version: %+v", st)
	}
	if v, _ := r.invoke("fn"); v != "2" {
		t.Errorf("after the crash loop, version %s answered", v)
	}

	// A package that is not what the deployment says.
	bad := v2
	bad.URL = srv.publish("/fn/4.tgz", pyPackage(t, "fn", "4", "")).URL
	st = r.submit(dep(6, fnApp("fn", "4", bad, tick), web1))
	if st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeChecksum {
		t.Errorf("a package with another digest: %+v", st)
	}
	if v, _ := r.invoke("fn"); v != "2" {
		t.Errorf("after the bad package, version %s answered", v)
	}
	if st.Running == nil || st.Running.Revision != 2 {
		t.Errorf("running after the failures: %+v", st.Running)
	}
}

// TestRejected: a deployment that breaks a rule is rejected with the
// reason and changes nothing: a configuration its schema refuses, a
// trigger of an unknown type or with bad parameters, a bind mount the
// gateway does not allow, another instance's deployment.
func TestRejected(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, nil)
	art := srv.publish("/fn/1.tgz", pyPackage(t, "fn", "1", ""))
	good := fnApp("fn", "1", art, tick)
	if st := r.submit(dep(1, good)); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("%+v", st)
	}
	schema := fnApp("fn", "2", art)
	schema.Version.ConfigSchema = json.RawMessage(`{"type": "object", "properties": {"threshold": {"type": "number", "maximum": 100}}}`)
	schema.Config.Overrides = json.RawMessage(`{"threshold": 140}`)
	ref := fnApp("fn", "2", art)
	ref.Version.ConfigSchema = json.RawMessage(`{"$ref": "file:///etc/passwd"}`)
	unknown := fnApp("fn", "2", art, app.Trigger{Name: "x", Type: "sundial"})
	badParams := fnApp("fn", "2", art, app.Trigger{Name: "x", Type: timer.Type, Params: json.RawMessage(`{"every": "often"}`)})
	bind := ctrApp("web", "1", nil)
	bind.Version.Container.Spec.Mounts = []app.Mount{{Type: "bind", Source: "/etc", Target: "/host-etc"}}
	other := dep(7, good)
	other.Instance = "gw-2"
	for i, tc := range []struct {
		d    *app.Deployment
		says string
	}{
		{dep(2, schema), "maximum"},
		{dep(3, ref), "configSchema"},
		{dep(4, unknown), "sundial"},
		{dep(5, badParams), "params.every"},
		{dep(6, good, bind), "bind mount of /etc"},
		{other, `instance "gw-2"`},
	} {
		st := r.submit(tc.d)
		if st.Outcome != app.OutcomeRejected || !strings.Contains(st.Reason, tc.says) {
			t.Errorf("case %d: %s %s, want rejected naming %q", i, st.Outcome, st.Reason, tc.says)
		}
		if st.Running == nil || st.Running.Revision != 1 {
			t.Errorf("case %d: running %+v", i, st.Running)
		}
	}
	if v, _ := r.invoke("fn"); v != "1" {
		t.Errorf("after the rejections, version %s answered", v)
	}
	if err := r.rec.Submit(dep(3, good)); err == nil {
		t.Error("a revision already taken was submitted again")
	}
	if err := r.rec.SubmitDocument([]byte(`{"schema": 1, "id": "broken", "revision": 99, "apps": [{}]}`)); err == nil {
		t.Error("a broken document was taken")
	}
	if st := r.rec.Status(); st.Outcome != app.OutcomeRejected || st.Revision != 99 || !strings.Contains(st.Reason, "apps[0]") {
		t.Errorf("status after a broken document: %+v", st)
	}
	// A manifest whose publish permissions are no MQTT filters fails the
	// deployment, naming the field, and the version before serves on.
	badPerm := fnApp("fn", "3", srv.publish("/fn/3.tgz", pyPackageWith(t, "fn", "3", "", `,"permissions":{"publish":["a/#/b"]}`)))
	if st := r.submit(dep(100, badPerm)); st.Outcome == app.OutcomeSucceeded || !strings.Contains(st.Reason, "permissions.publish[0]") {
		t.Errorf("bad publish permission: %s %s", st.Outcome, st.Reason)
	}
	if v, _ := r.invoke("fn"); v != "1" {
		t.Errorf("after the bad permission, version %s answered", v)
	}
}

// TestFetchFaults: a transfer broken halfway resumes with a Range request;
// an artifact server that never answers fails the deployment after its
// tries, and nothing changes.
func TestFetchFaults(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, func(o *reconcile.Options) {
		o.FetchAttempts, o.StallTimeout = 3, 200*time.Millisecond
		o.HTTPClient = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 200 * time.Millisecond}}
	})
	archive := pyPackage(t, "fn", "1", "# "+strings.Repeat("padding ", 20000))
	art := srv.publish("/fn/1.tgz", archive)
	srv.mu.Lock()
	srv.breaks = 1
	srv.mu.Unlock()
	if st := r.submit(dep(1, fnApp("fn", "1", art))); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("after a broken transfer: %+v", st)
	}
	srv.mu.Lock()
	ranges := srv.ranges
	srv.mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != fmt.Sprintf("bytes=%d-", len(archive)/2) {
		t.Errorf("Range headers %q, want none, then from the half received", ranges)
	}

	hold := make(chan struct{})
	defer close(hold)
	srv.mu.Lock()
	srv.hold = hold
	srv.mu.Unlock()
	v2 := srv.publish("/fn/2.tgz", pyPackage(t, "fn", "2", ""))
	st := r.submit(dep(2, fnApp("fn", "2", v2)))
	if st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeDownload || !strings.Contains(st.Reason, "3 tries") {
		t.Errorf("an artifact that never comes: %+v", st)
	}
	if v, _ := r.invoke("fn"); v != "1" {
		t.Errorf("version %s answers", v)
	}
}

// TestSuperseded: a revision that comes while another is fetching
// supersedes it; the newer one is applied.
func TestSuperseded(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, nil)
	hold := make(chan struct{})
	srv.mu.Lock()
	srv.hold = hold
	srv.mu.Unlock()
	slow := srv.publish("/fn/1.tgz", pyPackage(t, "fn", "1", ""))
	if err := r.rec.Submit(dep(1, fnApp("fn", "1", slow))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "revision 1 fetching", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.ranges) > 0
	})
	srv.mu.Lock()
	srv.hold = nil
	srv.mu.Unlock()
	close(hold)
	fast := srv.publish("/fn/2.tgz", pyPackage(t, "fn", "2", ""))
	if st := r.submit(dep(2, fnApp("fn", "2", fast))); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("revision 2: %+v", st)
	}
	r.mu.Lock()
	var superseded bool
	for _, s := range r.statuses {
		superseded = superseded || (s.Revision == 1 && s.Outcome == app.OutcomeSuperseded)
	}
	r.mu.Unlock()
	if !superseded {
		t.Error("revision 1 was never reported superseded")
	}
	if v, _ := r.invoke("fn"); v != "2" {
		t.Errorf("version %s answers", v)
	}
}

// TestRestartOffline: after a restart, with the artifact server gone, the
// last good deployment runs again from disk: the function, its trigger,
// the container adopted; a revision taken before is not taken again.
func TestRestartOffline(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, nil)
	art := srv.publish("/fn/1.tgz", pyPackage(t, "fn", "1", ""))
	if st := r.submit(dep(1, fnApp("fn", "1", art, tick), ctrApp("web", "1", nil))); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("%+v", st)
	}
	broken := srv.publish("/fn/2.tgz", pyPackage(t, "fn", "2", "raise SystemExit(3)"))
	if st := r.submit(dep(2, fnApp("fn", "2", broken, tick), ctrApp("web", "1", nil))); st.Outcome != app.OutcomeRolledBack {
		t.Fatalf("%+v", st)
	}
	webID := r.container("web").ContainerID
	srv.Close()
	r.shutdown()

	r.start()
	testenv.Eventually(t, "fn serving again", func() bool {
		_, err := r.host.Status("fn")
		return err == nil
	})
	if v, _ := r.invoke("fn"); v != "1" {
		t.Errorf("after the restart, version %s answered", v)
	}
	if got := triggerNames(r.set); len(got) != 1 || got[0] != "fn.tick" {
		t.Errorf("triggers after the restart: %v", got)
	}
	testenv.Eventually(t, "web adopted", func() bool { return r.container("web").State == container.AppRunning })
	if id := r.container("web").ContainerID; id != webID {
		t.Errorf("web's container %s after the restart, want %s adopted", id, webID)
	}
	if err := r.rec.Submit(dep(2, fnApp("fn", "2", broken))); err == nil {
		t.Error("the rolled-back revision was taken again after the restart")
	}
}

// TestSources: deployments come from a watched file and from a retained
// message on the bus; a file that does not read is rejected in the status
// and what runs keeps running.
func TestSources(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(r.dir, "deployment.json")
	watched := make(chan error, 1)
	go func() { watched <- r.rec.WatchFile(ctx, path, 10*time.Millisecond) }()
	defer func() { cancel(); <-watched }()

	write := func(d *app.Deployment) {
		b, _ := json.Marshal(d)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(dep(1, fnApp("fn", "1", srv.publish("/fn/1.tgz", pyPackage(t, "fn", "1", "")))))
	if st := r.await(1); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("from the file: %+v", st)
	}
	if err := os.WriteFile(path, []byte(`{"schema": 1, "id": "x", "revision": 2, "apps": [{"app": {"name": "fn", "kind": "lambda"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if st := r.await(2); st.Outcome != app.OutcomeRejected || !strings.Contains(st.Reason, "apps[0] (fn)") {
		t.Errorf("a file that does not read: %+v", st)
	}

	sub, err := r.rec.Subscribe(ctx, r.bus, "edgekit/instances/gw-1/desired")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe(context.Background())
	b, _ := json.Marshal(dep(3, fnApp("fn", "2", srv.publish("/fn/2.tgz", pyPackage(t, "fn", "2", "")))))
	if err := r.bus.Publish(ctx, &bus.Message{Topic: "edgekit/instances/gw-1/desired", Payload: b, QoS: bus.AtLeastOnce, Retain: true}); err != nil {
		t.Fatal(err)
	}
	if st := r.await(3); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("from the bus: %+v", st)
	}
	if v, _ := r.invoke("fn"); v != "2" {
		t.Errorf("version %s answers", v)
	}
}

// TestSignatures: with a key, an unsigned package and one signed by
// another key are refused before anything changes; a signed one runs.
func TestSignatures(t *testing.T) {
	srv := newServer(t)
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	r := newRigWith(t, pub, nil)
	archive := pyPackage(t, "fn", "1", "")
	art := srv.publish("/fn/1.tgz", archive)
	st := r.submit(dep(1, fnApp("fn", "1", art)))
	if st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeSignature {
		t.Errorf("unsigned: %+v", st)
	}
	art.Signature = codepkg.Sign(other, archive)
	if st := r.submit(dep(2, fnApp("fn", "1", art))); st.Outcome != app.OutcomeRolledBack || st.Code != app.CodeSignature {
		t.Errorf("signed by another key: %+v", st)
	}
	if _, err := r.host.Status("fn"); err == nil {
		t.Error("a refused package runs")
	}
	art.Signature = codepkg.Sign(priv, archive)
	if st := r.submit(dep(3, fnApp("fn", "1", art))); st.Outcome != app.OutcomeSucceeded {
		t.Errorf("signed: %+v", st)
	}
}

// TestDamagedPackageAtRestart: a byte flipped in an installed package
// while the gateway was down costs that app only: at the restart it is
// failed, naming the file, and the other app runs.
func TestDamagedPackageAtRestart(t *testing.T) {
	srv := newServer(t)
	r := newRig(t, nil)
	a := fnApp("a", "1", srv.publish("/a/1.tgz", pyPackage(t, "a", "1", "")))
	b := fnApp("b", "1", srv.publish("/b/1.tgz", pyPackage(t, "b", "1", "")))
	if st := r.submit(dep(1, a, b)); st.Outcome != app.OutcomeSucceeded {
		t.Fatalf("%+v", st)
	}
	r.shutdown()
	code := filepath.Join(r.dir, "packages", "a", "1", "main.py")
	src, err := os.ReadFile(code)
	if err != nil {
		t.Fatal(err)
	}
	src[0] ^= 0x20
	if err := os.WriteFile(code, src, 0o644); err != nil {
		t.Fatal(err)
	}
	r.start()
	var st app.Status
	testenv.Eventually(t, "the restore's outcome", func() bool {
		st = r.rec.Status()
		return appStatus(st, "a").Phase == app.PhaseFailed && appStatus(st, "b").Phase == app.PhaseRunning
	})
	if s := appStatus(st, "a"); !strings.Contains(s.Reason, "damaged") || !strings.Contains(s.Reason, "main.py") {
		t.Errorf("a: %+v, want it failed naming the damaged file", s)
	}
	if v, _ := r.invoke("b"); v != "1" {
		t.Errorf("b answered version %s", v)
	}
	if _, err := r.host.Status("a"); err == nil {
		t.Error("the damaged package runs")
	}
}
