package e2e_test

import (
	"context"
	"encoding/json"
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
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleetapi"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/pgtest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestFleetEndToEnd: the fleet's console program on a real Mosquitto and
// a real PostgreSQL, with three real gateways (each its own data
// directory; the two that run the container app each their own podman).
// Every operator step is a console command: a function app (packed from
// its directory, signed, uploaded to the fleet's artifact server) and a
// container app, deployed by label to two of the three, run there and the
// console shows them current; v2 of the function rolls out in two waves;
// v3, which crashes at start, is stopped by its failure threshold in its
// first wave, and the gateway it reached is back on v2, reported with the
// reason, while the other never receives v3.
func TestFleetEndToEnd(t *testing.T) {
	upstream := brokertest.Start(t, nil)
	pg := pgtest.Start(t)
	con := startConsole(t, upstream.URL().String(), "postgres:"+pg.DSN)
	dir := t.TempDir()
	key, pub := con.keygen(dir)

	// The function's versions: the Go function built here; v3 crashes at
	// start.
	bootstrap := versionFn(t, dir)
	con.must(nil, "app", "create", "hello-go", "-kind", "function")
	con.must(nil, "app", "create", "web", "-kind", "container")
	for v, env := range map[string]map[string]string{"1": nil, "2": nil, "3": {"CRASH": "1"}} {
		fn := functionDir(t, filepath.Join(dir, "hello-go-"+v), bootstrap, env)
		var added fleet.Version
		con.must(&added, "version", "add", "hello-go", v, "-dir", fn, "-sign", key, "-probation", "1s")
		if added.Version.Function == nil || len(added.Version.Function.Package.Signature) == 0 {
			t.Fatalf("version %s added unsigned: %+v", v, added)
		}
	}
	webSpec, _ := json.Marshal(app.ContainerVersion{Spec: app.ContainerSpec{Command: []string{"/testprog"}, NetworkMode: "none", StopGrace: app.Duration(time.Second)},
		Health: &app.Probe{Exec: []string{"/testprog", "echo", "ok"}, Interval: app.Duration(200 * time.Millisecond)}})
	con.must(nil, "version", "add", "web", "1", "-image", image, "-container", string(webSpec), "-probation", "2s")

	// Three gateways, labelled by the console; the two at site=plant-1
	// have a podman each. They take only packages signed with the key.
	byID := map[string]*edge.Gateway{}
	for i, site := range []string{"plant-1", "plant-1", "plant-2"} {
		id := fmt.Sprintf("gw-%d", i+1)
		con.must(nil, "instance", "label", id, "site="+site)
		o := &edge.Options{DataDir: filepath.Join(dir, id), Instance: id, DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
			Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}}, StatusInterval: time.Second,
			Packages: &codepkg.Options{PublicKey: pub}}
		if site == "plant-1" {
			_, rt := privatePodman(t)
			o.ContainerRuntime = rt
			o.Containers = &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: time.Second}
		}
		byID[id], _ = gatewaytest.Run(t, o)
	}
	runs := func(id string) map[string]string { return running(byID[id]) }
	// settled waits until the console shows the deployment in state want.
	settled := func(id string, want fleet.DeploymentState) (fleet.Deployment, map[string]fleet.Target) {
		t.Helper()
		var view fleetapi.DeploymentView
		testenv.EventuallyWithin(t, "console rollout status "+id+": "+string(want), 2*time.Minute, func() bool {
			view = con.rollout(id)
			return view.Deployment.State == want
		})
		m := map[string]fleet.Target{}
		for _, tg := range view.Targets {
			m[tg.Instance] = tg
		}
		return view.Deployment, m
	}

	// v1 of both apps by label: on gw-1 and gw-2, not gw-3.
	con.must(nil, "deploy", "plant-1-v1", "-selector", "site=plant-1", "hello-go=1", "web=1")
	if _, ts := settled("plant-1-v1", fleet.DeploymentSucceeded); len(ts) != 2 || ts["gw-3"].Instance != "" {
		t.Fatalf("v1 reached %v, want gw-1 and gw-2", ts)
	}
	for _, id := range []string{"gw-1", "gw-2"} {
		if got := runs(id); got["hello-go"] != "1" || got["web"] != "1" {
			t.Errorf("%s runs %v, want hello-go 1 and web 1", id, got)
		}
	}
	if got := runs("gw-3"); len(got) != 0 {
		t.Errorf("gw-3 (plant-2) runs %v", got)
	}
	testenv.Eventually(t, "console instance list: gw-1 and gw-2 online and current on plant-1-v1", func() bool {
		current := 0
		for _, in := range con.instances() {
			if in.Current && in.Presence == "online" && in.Running == "plant-1-v1" && in.Status != nil && in.Status.Outcome == app.OutcomeSucceeded {
				current++
			}
		}
		return current == 2
	})
	// The container app's logs, and an app gw-3 does not run, asked of
	// the gateways through the broker.
	var logs app.LogsReply
	con.must(&logs, "instance", "logs", "gw-1", "web", "-limit", "50")
	if logs.App != "web" || logs.Kind != app.KindContainer || logs.Lines == nil {
		t.Errorf("console instance logs gw-1 web: %+v", logs)
	}
	if _, err := con.run("instance", "logs", "gw-3", "web"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("console instance logs gw-3 web (not running there): %v", err)
	}

	// v2 in two waves.
	con.must(nil, "deploy", "plant-1-v2", "-selector", "site=plant-1", "-priority", "1", "-waves", "1,100%", "hello-go=2", "web=1")
	d2, ts2 := settled("plant-1-v2", fleet.DeploymentSucceeded)
	if fmt.Sprint(d2.Waves) != "[1 1]" || ts2["gw-1"].Wave == ts2["gw-2"].Wave {
		t.Errorf("v2's waves %v, targets %+v", d2.Waves, ts2)
	}
	for _, id := range []string{"gw-1", "gw-2"} {
		if got := runs(id); got["hello-go"] != "2" || got["web"] != "1" {
			t.Errorf("%s runs %v after v2", id, got)
		}
	}

	// v3 crashes at start: stopped in its first wave.
	con.must(nil, "deploy", "plant-1-v3", "-selector", "site=plant-1", "-priority", "2", "-waves", "1,100%", "hello-go=3", "web=1")
	d3, ts3 := settled("plant-1-v3", fleet.DeploymentAborted)
	var first, second string
	for id, tg := range ts3 {
		if tg.Wave == 0 {
			first = id
		} else {
			second = id
		}
	}
	t.Logf("v3 aborted: %s", d3.Reason)
	testenv.EventuallyWithin(t, "the first wave's gateway back on v2, confirmed", time.Minute, func() bool {
		for _, tg := range con.rollout("plant-1-v3").Targets {
			if tg.Instance == first {
				s := byID[first].Reconciler().Status()
				return tg.State == fleet.TargetRolledBack && s.Revision == tg.Revision+1 && s.Outcome == app.OutcomeSucceeded
			}
		}
		return false
	})
	_, ts3 = settled("plant-1-v3", fleet.DeploymentAborted)
	if tg := ts3[first]; tg.Code != app.CodeStart || !strings.Contains(tg.Reason, "rolled-back") || tg.Previous != "plant-1-v2" {
		t.Errorf("the rolled back target: %+v, want the gateway's StartFailed and its reason, previous plant-1-v2", tg)
	}
	if tg := ts3[second]; tg.State != fleet.TargetCancelled || tg.Revision != 0 {
		t.Errorf("the second wave's target %+v: want cancelled, never sent", tg)
	}
	if got := runs(first); got["hello-go"] != "2" || got["web"] != "1" {
		t.Errorf("%s runs %v after the rollback, want hello-go 2, web 1", first, got)
	}
	if s := byID[second].Reconciler().Status(); s.Deployment != "plant-1-v2" {
		t.Errorf("%s's status is about %s (revision %d): it must never have received v3", second, s.Deployment, s.Revision)
	}
	if got := runs(second); got["hello-go"] != "2" {
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
	con := startConsole(t, upstream.URL().String(), "") // the embedded store
	reports := &statuses{}
	watcher := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "watcher"})
	if _, err := watcher.Subscribe(ctx, edge.StatusTopic("gw-off"), reports.handle, nil); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	fn := functionDir(t, filepath.Join(dir, "hello-go"), versionFn(t, dir), nil)
	con.must(nil, "app", "create", "hello-go", "-kind", "function")
	for _, v := range []string{"1", "2", "3"} {
		con.must(nil, "version", "add", "hello-go", v, "-dir", fn, "-config", `{"greeting":"hi"}`, "-probation", "1s")
	}
	con.must(nil, "instance", "label", "gw-off", "site=ship")
	up := newLink(t, upstream.URL().Host)
	g, _ := gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(dir, "data"), Instance: "gw-off", DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
		Upstream:       &mqttbus.Options{Brokers: []string{"mqtt://" + up.addr}, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond},
		StatusInterval: 300 * time.Millisecond})
	deploy := func(id, priority, version string) {
		t.Helper()
		con.must(nil, "deploy", id, "-selector", "site=ship", "-priority", priority, "hello-go="+version)
	}
	instance := func() fleet.InstanceView {
		if ins := con.instances(); len(ins) == 1 {
			return ins[0]
		}
		return fleet.InstanceView{}
	}
	deploy("ship-1", "0", "1")
	testenv.EventuallyWithin(t, "ship-1 on the gateway", time.Minute, func() bool {
		return con.rollout("ship-1").Deployment.State == fleet.DeploymentSucceeded
	})

	// The link goes down; while it is, two deployments and a
	// configuration change are published.
	up.cut()
	testenv.EventuallyWithin(t, "the console shows the gateway offline", time.Minute, func() bool {
		return instance().Presence == "offline"
	})
	deploy("ship-2", "1", "2")
	con.must(nil, "config", "set", "hello-go", "-instance", "gw-off", `{"greeting":"ahoy"}`)
	deploy("ship-3", "2", "3")
	testenv.EventuallyWithin(t, "the console shows ship-3's target unknown while the gateway is away", time.Minute, func() bool {
		v := con.rollout("ship-3")
		return len(v.Targets) == 1 && v.Targets[0].State == fleet.TargetUnknown && v.Counts[fleet.TargetSucceeded] == 0
	})
	if in := instance(); in.Current || in.Running != "ship-1" {
		t.Fatalf("while away the console shows %+v: want not current, running ship-1", in)
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
		return con.rollout("ship-3").Deployment.State == fleet.DeploymentSucceeded
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

// TestFleetLostDocument: the broker loses a gateway's retained desired
// document behind the fleet's back (it is deleted on the real Mosquitto
// while the gateway is down, and the gateway keeps no broker session, so
// nothing is queued for it either). The gateway comes back on what it
// ran, reports that older revision, and the fleet sends the document
// again: the gateway is corrected at its next report, and nothing it ran
// was removed meanwhile.
func TestFleetLostDocument(t *testing.T) {
	ctx := context.Background()
	upstream := brokertest.Start(t, nil)
	con := startConsole(t, upstream.URL().String(), "")
	dir := t.TempDir()
	fn := functionDir(t, filepath.Join(dir, "hello-go"), versionFn(t, dir), nil)
	con.must(nil, "app", "create", "hello-go", "-kind", "function")
	for _, v := range []string{"1", "2"} {
		con.must(nil, "version", "add", "hello-go", v, "-dir", fn, "-probation", "1s")
	}
	con.must(nil, "instance", "label", "gw-lost", "site=dock")
	opts := &edge.Options{DataDir: filepath.Join(dir, "data"), Instance: "gw-lost", DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
		Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}, SessionExpiry: -1}, StatusInterval: 300 * time.Millisecond}
	g, stop := gatewaytest.Run(t, opts)
	runs := func(g *edge.Gateway) string { return running(g)["hello-go"] }
	con.must(nil, "deploy", "dock-1", "-selector", "site=dock", "hello-go=1")
	testenv.EventuallyWithin(t, "dock-1 on the gateway", time.Minute, func() bool {
		return con.rollout("dock-1").Deployment.State == fleet.DeploymentSucceeded
	})
	stop()

	con.must(nil, "deploy", "dock-2", "-selector", "site=dock", "-priority", "1", "hello-go=2")
	var sent uint64
	testenv.EventuallyWithin(t, "dock-2's document published", time.Minute, func() bool {
		v := con.rollout("dock-2")
		if len(v.Targets) == 1 {
			sent = v.Targets[0].Revision
		}
		return sent > 0
	})
	// Behind the fleet's back: the retained document is deleted, and
	// seen to be gone.
	cloud := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "behind-the-fleet", SessionExpiry: -1})
	if err := cloud.Publish(ctx, &bus.Message{Topic: edge.DesiredTopic("gw-lost"), Retain: true, QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	retained := make(chan []byte, 1)
	probe := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "probe", SessionExpiry: -1})
	if _, err := probe.Subscribe(ctx, edge.DesiredTopic("gw-lost"), func(_ context.Context, m *bus.Message) {
		select {
		case retained <- m.Payload:
		default:
		}
	}, nil); err != nil {
		t.Fatal(err)
	}
	// A message of its own after the subscription arrives after anything
	// retained would have.
	marked := make(chan struct{})
	var once sync.Once
	if _, err := probe.Subscribe(ctx, "probe/marker", func(context.Context, *bus.Message) { once.Do(func() { close(marked) }) }, nil); err != nil {
		t.Fatal(err)
	}
	if err := probe.Publish(ctx, &bus.Message{Topic: "probe/marker", Payload: []byte("m"), QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-marked:
	case <-time.After(time.Minute):
		t.Fatal("the probe's own message never came back")
	}
	select {
	case b := <-retained:
		if len(b) != 0 {
			t.Fatalf("the retained document is still there: %.80s", b)
		}
	default: // nothing retained: as wanted
	}

	// The gateway comes back: no document waits for it. It runs v1 from
	// its own state, reports so, and the fleet corrects it.
	g, _ = gatewaytest.Run(t, opts)
	testenv.EventuallyWithin(t, "the gateway back on what it ran (or already corrected)", time.Minute, func() bool {
		v := runs(g)
		return v == "1" || v == "2"
	})
	testenv.EventuallyWithin(t, "dock-2 reaches the gateway after its stale report", time.Minute, func() bool {
		return con.rollout("dock-2").Deployment.State == fleet.DeploymentSucceeded
	})
	if v := runs(g); v != "2" {
		t.Errorf("the gateway runs %q after the correction, want 2", v)
	}
	if s := g.Reconciler().Status(); s.Deployment != "dock-2" || s.Revision < sent {
		t.Errorf("the gateway's status: deployment %s revision %d, want dock-2 at %d or later", s.Deployment, s.Revision, sent)
	}
}
