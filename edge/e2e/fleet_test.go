package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/edge/fleet/store/boltstore"
	"github.com/edgekit/edgekit/edge/fleet/store/pgstore"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/pgtest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestFleetEndToEnd: the fleet on a real Mosquitto and a real
// PostgreSQL, with three real gateways (each its own data directory; the
// two that run the container app each their own podman): a function app
// and a container app deployed by label to two of the three run there; v2
// of the function rolls out in two waves; v3, which crashes at start, is
// stopped by its failure threshold in its first wave, and the gateway it
// reached is back on v2, reported with the reason, while the other never
// receives v3.
func TestFleetEndToEnd(t *testing.T) {
	ctx := context.Background()
	upstream := brokertest.Start(t, nil)
	pg := pgtest.Start(t)
	st, err := pgstore.Open(ctx, pg.DSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(ctx) })
	fleetBus := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "fleet-1"})
	f, err := fleet.New(&fleet.Options{Store: st, Bus: fleetBus, Tick: 50 * time.Millisecond, RepublishAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fleettest.Run(t, f)

	// The function's versions: the Go function built here; v3 crashes at
	// start.
	dir := t.TempDir()
	bootstrap := versionFn(t, dir)
	arts := newArtifacts(t)
	goVersion := func(version, env string) app.Version {
		manifest := `{"name":"hello-go","version":"` + version + `","runtime":"executable","handler":"bootstrap"` + env + `}`
		art := arts.publish(t, "/hello-go-"+version+".tgz", [][2]string{{"function.json", manifest}, {"bootstrap", string(bootstrap)}}, map[string]int64{"bootstrap": 0o755})
		return app.Version{Version: version, Function: &app.FunctionVersion{Package: art}, Probation: app.Duration(time.Second)}
	}
	if _, err := f.CreateApp(ctx, fleet.App{Name: "hello-go", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.CreateApp(ctx, fleet.App{Name: "web", Kind: app.KindContainer}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []app.Version{goVersion("1", ""), goVersion("2", ""), goVersion("3", `,"env":{"CRASH":"1"}`)} {
		if _, err := f.AddVersion(ctx, "hello-go", v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.AddVersion(ctx, "web", app.Version{Version: "1", Probation: app.Duration(2 * time.Second),
		Container: &app.ContainerVersion{Image: image, Spec: app.ContainerSpec{Command: []string{"/testprog"}, NetworkMode: "none", StopGrace: app.Duration(time.Second)},
			Health: &app.Probe{Exec: []string{"/testprog", "echo", "ok"}, Interval: app.Duration(200 * time.Millisecond)}}}); err != nil {
		t.Fatal(err)
	}

	// Three gateways; the two labelled site=plant-1 have a podman each.
	type gw struct {
		g  *edge.Gateway
		id string
	}
	var gws []gw
	for i, site := range []string{"plant-1", "plant-1", "plant-2"} {
		id := fmt.Sprintf("gw-%d", i+1)
		o := &edge.Options{DataDir: filepath.Join(dir, id), Instance: id, DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
			Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}}, StatusInterval: time.Second}
		if site == "plant-1" {
			_, rt := privatePodman(t)
			o.ContainerRuntime = rt
			o.Containers = &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: time.Second}
		}
		if _, err := f.RegisterInstance(ctx, id, map[string]string{"site": site}); err != nil {
			t.Fatal(err)
		}
		g, _ := gatewaytest.Run(t, o)
		gws = append(gws, gw{g, id})
	}
	runs := func(g *edge.Gateway) map[string]string {
		out := map[string]string{}
		for _, a := range g.Reconciler().Status().Apps {
			if a.Phase == app.PhaseRunning {
				out[a.App] = a.Version
			}
		}
		return out
	}
	deployment := func(id string, want fleet.DeploymentState) (fleet.Deployment, map[string]fleet.Target) {
		t.Helper()
		var d fleet.Deployment
		var ts []fleet.Target
		testenv.EventuallyWithin(t, "deployment "+id+" "+string(want), 2*time.Minute, func() bool {
			d, ts, err = f.Deployment(ctx, id)
			return err == nil && d.State == want
		})
		m := map[string]fleet.Target{}
		for _, tg := range ts {
			m[tg.Instance] = tg
		}
		return d, m
	}

	// v1 of both apps by label: on gw-1 and gw-2, not gw-3.
	if _, err := f.Deploy(ctx, fleet.Deployment{ID: "plant-1-v1", Selector: "site=plant-1",
		Apps: []fleet.AppVersion{{App: "hello-go", Version: "1"}, {App: "web", Version: "1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, ts := deployment("plant-1-v1", fleet.DeploymentSucceeded); len(ts) != 2 {
		t.Fatalf("v1 reached %d instances, want 2", len(ts))
	}
	for _, g := range gws[:2] {
		if got := runs(g.g); got["hello-go"] != "1" || got["web"] != "1" {
			t.Errorf("%s runs %v, want hello-go 1 and web 1", g.id, got)
		}
	}
	if got := runs(gws[2].g); len(got) != 0 {
		t.Errorf("gw-3 (plant-2) runs %v", got)
	}
	testenv.Eventually(t, "the instances shown current", func() bool {
		ins, _ := f.Instances(ctx)
		current := 0
		for _, in := range ins {
			if in.Current && in.Presence == "online" && in.Running == "plant-1-v1" {
				current++
			}
		}
		return current == 2
	})

	// v2 in two waves.
	if _, err := f.Deploy(ctx, fleet.Deployment{ID: "plant-1-v2", Selector: "site=plant-1", Priority: 1,
		Apps:   []fleet.AppVersion{{App: "hello-go", Version: "2"}, {App: "web", Version: "1"}},
		Policy: fleet.Policy{Waves: []fleet.Wave{{Count: 1}, {Percent: 100}}}}); err != nil {
		t.Fatal(err)
	}
	d2, ts2 := deployment("plant-1-v2", fleet.DeploymentSucceeded)
	if fmt.Sprint(d2.Waves) != "[1 1]" || ts2["gw-1"].Wave == ts2["gw-2"].Wave {
		t.Errorf("v2's waves %v, targets %+v", d2.Waves, ts2)
	}
	for _, g := range gws[:2] {
		if got := runs(g.g); got["hello-go"] != "2" || got["web"] != "1" {
			t.Errorf("%s runs %v after v2", g.id, got)
		}
	}

	// v3 crashes at start: stopped in its first wave.
	if _, err := f.Deploy(ctx, fleet.Deployment{ID: "plant-1-v3", Selector: "site=plant-1", Priority: 2,
		Apps:   []fleet.AppVersion{{App: "hello-go", Version: "3"}, {App: "web", Version: "1"}},
		Policy: fleet.Policy{Waves: []fleet.Wave{{Count: 1}, {Percent: 100}}}}); err != nil {
		t.Fatal(err)
	}
	d3, ts3 := deployment("plant-1-v3", fleet.DeploymentAborted)
	var first, second string
	for id, tg := range ts3 {
		if tg.Wave == 0 {
			first = id
		} else {
			second = id
		}
	}
	t.Logf("v3 aborted: %s", d3.Reason)
	byID := map[string]*edge.Gateway{}
	for _, g := range gws {
		byID[g.id] = g.g
	}
	testenv.EventuallyWithin(t, "the first wave's gateway back on v2, confirmed", time.Minute, func() bool {
		_, ts, _ := f.Deployment(ctx, "plant-1-v3")
		for _, tg := range ts {
			if tg.Instance == first {
				s := byID[first].Reconciler().Status()
				return tg.State == fleet.TargetRolledBack && s.Revision == tg.Revision+1 && s.Outcome == app.OutcomeSucceeded
			}
		}
		return false
	})
	_, ts, _ := f.Deployment(ctx, "plant-1-v3")
	for _, tg := range ts {
		switch tg.Instance {
		case first:
			if tg.Code != app.CodeStart || !strings.Contains(tg.Reason, "rolled-back") || tg.Previous != "plant-1-v2" {
				t.Errorf("the rolled back target: %+v, want the gateway's StartFailed and its reason, previous plant-1-v2", tg)
			}
		case second:
			if tg.State != fleet.TargetCancelled || tg.Revision != 0 {
				t.Errorf("the second wave's target %+v: want cancelled, never sent", tg)
			}
		}
	}
	if got := runs(byID[first]); got["hello-go"] != "2" || got["web"] != "1" {
		t.Errorf("%s runs %v after the rollback, want hello-go 2, web 1", first, got)
	}
	if s := byID[second].Reconciler().Status(); s.Deployment != "plant-1-v2" {
		t.Errorf("%s's status is about %s (revision %d): it must never have received v3", second, s.Deployment, s.Revision)
	}
	if got := runs(byID[second]); got["hello-go"] != "2" {
		t.Errorf("%s runs %v", second, got)
	}
}

// link is a TCP proxy to the broker that a test can cut and restore on
// the same address: a gateway behind it loses its upstream while it runs.
type link struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func newLink(t *testing.T, target string) *link {
	l := &link{target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	l.serve(ln)
	t.Cleanup(l.cut)
	return l
}

func (l *link) serve(ln net.Listener) {
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", l.target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, up)
			l.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection through it.
func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

func (l *link) restore(t *testing.T) {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	l.serve(ln)
}

// TestFleetOfflineGateway: a gateway whose link is down while two
// deployments and a configuration change are published shows unknown in
// the fleet (never succeeded) while away, goes straight to the newest
// revision when it is back — never applying the ones between — and the
// status reports it made while offline arrive.
func TestFleetOfflineGateway(t *testing.T) {
	ctx := context.Background()
	upstream := brokertest.Start(t, nil)
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "fleet.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(ctx) })
	fleetBus := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "fleet", SessionExpiry: -1})
	f, err := fleet.New(&fleet.Options{Store: st, Bus: fleetBus, Tick: 50 * time.Millisecond, RepublishAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fleettest.Run(t, f)
	reports := &statuses{}
	watcher := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "watcher"})
	if _, err := watcher.Subscribe(ctx, edge.StatusTopic("gw-off"), reports.handle, nil); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	bootstrap := versionFn(t, dir)
	arts := newArtifacts(t)
	if _, err := f.CreateApp(ctx, fleet.App{Name: "hello-go", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2", "3"} {
		manifest := `{"name":"hello-go","version":"` + v + `","runtime":"executable","handler":"bootstrap"}`
		art := arts.publish(t, "/hello-go-"+v+".tgz", [][2]string{{"function.json", manifest}, {"bootstrap", string(bootstrap)}}, map[string]int64{"bootstrap": 0o755})
		if _, err := f.AddVersion(ctx, "hello-go", app.Version{Version: v, Function: &app.FunctionVersion{Package: art}, Config: []byte(`{"greeting":"hi"}`), Probation: app.Duration(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.RegisterInstance(ctx, "gw-off", map[string]string{"site": "ship"}); err != nil {
		t.Fatal(err)
	}
	up := newLink(t, upstream.URL().Host)
	g, _ := gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(dir, "data"), Instance: "gw-off", DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
		Upstream:       &mqttbus.Options{Brokers: []string{"mqtt://" + up.addr}, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond},
		StatusInterval: 300 * time.Millisecond})
	deploy := func(id string, priority int, version string) {
		t.Helper()
		if _, err := f.Deploy(ctx, fleet.Deployment{ID: id, Selector: "site=ship", Priority: priority, Apps: []fleet.AppVersion{{App: "hello-go", Version: version}}}); err != nil {
			t.Fatal(err)
		}
	}
	deploy("ship-1", 0, "1")
	testenv.EventuallyWithin(t, "ship-1 on the gateway", time.Minute, func() bool {
		d, _, _ := f.Deployment(ctx, "ship-1")
		return d.State == fleet.DeploymentSucceeded
	})

	// The link goes down; while it is, two deployments and a
	// configuration change are published.
	up.cut()
	testenv.EventuallyWithin(t, "the gateway shown offline", time.Minute, func() bool {
		ins, _ := f.Instances(ctx)
		return len(ins) == 1 && ins[0].Presence == "offline"
	})
	deploy("ship-2", 1, "2")
	if _, err := f.SetConfig(ctx, "hello-go", fleet.Scope{Instance: "gw-off"}, []byte(`{"greeting":"ahoy"}`)); err != nil {
		t.Fatal(err)
	}
	deploy("ship-3", 2, "3")
	var ts []fleet.Target
	testenv.EventuallyWithin(t, "ship-3's target unknown while the gateway is away", time.Minute, func() bool {
		_, ts, _ = f.Deployment(ctx, "ship-3")
		return len(ts) == 1 && ts[0].State == fleet.TargetUnknown
	})
	ins, _ := f.Instances(ctx)
	if ins[0].Current || ins[0].Running != "ship-1" {
		t.Fatalf("while away the fleet says %+v: want not current, running ship-1", ins[0])
	}
	// The gateway goes on reporting (its heartbeat) into its queue while
	// away.
	var queued int
	testenv.EventuallyWithin(t, "status reports queued while the link is down", time.Minute, func() bool {
		queued = g.Upstream().Stats().Queue.Messages
		return queued >= 3
	})
	oldReports := func() int {
		reports.mu.Lock()
		defer reports.mu.Unlock()
		n := 0
		for _, s := range reports.all {
			if s.Deployment == "ship-1" {
				n++
			}
		}
		return n
	}
	before := oldReports()

	up.restore(t)
	testenv.EventuallyWithin(t, "ship-3 succeeded on the gateway once it is back", 2*time.Minute, func() bool {
		d, _, _ := f.Deployment(ctx, "ship-3")
		return d.State == fleet.DeploymentSucceeded
	})
	if s := g.Reconciler().Status(); s.Deployment != "ship-3" {
		t.Fatalf("the gateway's status is about %s", s.Deployment)
	}
	for _, a := range g.Reconciler().Status().Apps {
		if a.App == "hello-go" && a.Version != "3" {
			t.Errorf("hello-go %s, want 3", a.Version)
		}
	}
	reports.mu.Lock()
	between := 0
	for _, s := range reports.all {
		if s.Deployment == "ship-2" {
			between++
		}
	}
	reports.mu.Unlock()
	if between != 0 {
		t.Errorf("the gateway reported on ship-2 %d times: it must go straight to the newest revision", between)
	}
	testenv.EventuallyWithin(t, "the queue drained upstream", time.Minute, func() bool { return g.Upstream().Stats().Queue.Messages == 0 })
	if arrived := oldReports() - before; arrived < queued {
		t.Errorf("%d status reports were queued while offline, %d arrived", queued, arrived)
	}
}
