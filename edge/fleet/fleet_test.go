package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/internal/testenv"
)

// harness is a fleet on an in-process bus and an embedded store, with
// simulated gateways on the same bus.
type harness struct {
	t     *testing.T
	ctx   context.Context
	bus   bus.Bus
	store store.Store
	fleet *fleet.Fleet
	gws   map[string]*fleettest.Gateway
}

func newHarness(t *testing.T, opts *fleet.Options) *harness {
	t.Helper()
	f, b, st := fleettest.New(t, opts)
	fleettest.Run(t, f)
	return &harness{t: t, ctx: context.Background(), bus: b, store: st, fleet: f, gws: map[string]*fleettest.Gateway{}}
}

func (h *harness) gateway(id string, labels map[string]string, behave fleettest.Behave) *fleettest.Gateway {
	h.t.Helper()
	if _, err := h.fleet.RegisterInstance(h.ctx, id, labels); err != nil {
		h.t.Fatal(err)
	}
	g, err := fleettest.Start(h.ctx, id, h.bus, behave)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = g.Stop(h.ctx) })
	h.gws[id] = g
	return g
}

// functionVersion is a function app's version; its package is never
// fetched by the simulated gateways.
func functionVersion(v string) app.Version {
	return app.Version{Version: v, Config: []byte(`{"threshold":80,"unit":"C"}`), Function: &app.FunctionVersion{
		Package:  app.Artifact{URL: "https://packages.example.com/alarm-" + v + ".tar.gz", SHA256: strings.Repeat("ab", 32)},
		Triggers: []app.Trigger{{Name: "every", Type: "timer", Params: []byte(`{"every":"1m"}`)}},
	}}
}

func (h *harness) catalogue(versions ...string) {
	h.t.Helper()
	if _, err := h.fleet.CreateApp(h.ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		h.t.Fatal(err)
	}
	for _, v := range versions {
		if _, err := h.fleet.AddVersion(h.ctx, "alarm", functionVersion(v)); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) deploy(d fleet.Deployment) {
	h.t.Helper()
	if _, err := h.fleet.Deploy(h.ctx, d); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) awaitDeployment(id string, want fleet.DeploymentState) (fleet.Deployment, []fleet.Target) {
	h.t.Helper()
	var d fleet.Deployment
	var ts []fleet.Target
	testenv.Eventually(h.t, "deployment "+id+" "+string(want), func() bool {
		var err error
		d, ts, err = h.fleet.Deployment(h.ctx, id)
		return err == nil && d.State == want
	})
	return d, ts
}

// runningVersion is the alarm version a simulated gateway runs.
func runningVersion(g *fleettest.Gateway) string {
	_, d := g.Running()
	if d == nil {
		return ""
	}
	a, _ := d.Find("alarm")
	return a.Version.Version
}

func targetsByInstance(ts []fleet.Target) map[string]fleet.Target {
	m := map[string]fleet.Target{}
	for _, t := range ts {
		m[t.Instance] = t
	}
	return m
}

// TestRollout: a deployment by label reaches the two matching gateways
// of three; v2 goes out in two waves; v3, which fails on the first
// gateway that gets it, stops at the first wave and that gateway is put
// back on v2 with the reason, while the other never receives v3.
func TestRollout(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1", "2", "3")
	failV3 := func(_ string, d *app.Deployment) error {
		if a, _ := d.Find("alarm"); a.Version.Version == "3" {
			return errors.New("the function exited at start (exit status 3)")
		}
		return nil
	}
	for i, env := range []string{"prod", "prod", "test"} {
		h.gateway(fmt.Sprintf("gw-%d", i+1), map[string]string{"env": env}, failV3)
	}
	h.deploy(fleet.Deployment{ID: "alarm-v1", Selector: "env=prod", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	_, ts := h.awaitDeployment("alarm-v1", fleet.DeploymentSucceeded)
	if len(ts) != 2 {
		t.Fatalf("v1 targets %d instances, want the 2 labelled env=prod", len(ts))
	}
	for _, id := range []string{"gw-1", "gw-2"} {
		if v := runningVersion(h.gws[id]); v != "1" {
			t.Errorf("%s runs %q, want 1", id, v)
		}
	}
	if v := runningVersion(h.gws["gw-3"]); v != "" {
		t.Errorf("gw-3 (env=test) runs %q", v)
	}

	h.deploy(fleet.Deployment{ID: "alarm-v2", Selector: "env=prod", Priority: 1, Apps: []fleet.AppVersion{{App: "alarm", Version: "2"}},
		Policy: fleet.Policy{Waves: []fleet.Wave{{Count: 1}, {Percent: 100}}}})
	d, ts := h.awaitDeployment("alarm-v2", fleet.DeploymentSucceeded)
	if fmt.Sprint(d.Waves) != "[1 1]" {
		t.Errorf("v2's waves %v, want [1 1]", d.Waves)
	}
	waves := map[int]int{}
	for _, tg := range ts {
		waves[tg.Wave]++
		if tg.State != fleet.TargetSucceeded || tg.Previous != "alarm-v1" {
			t.Errorf("v2 target %+v", tg)
		}
	}
	if waves[0] != 1 || waves[1] != 1 {
		t.Errorf("v2's instances by wave %v", waves)
	}
	if _, old := h.awaitDeployment("alarm-v1", fleet.DeploymentSucceeded); len(old) != 2 {
		t.Errorf("v1's targets after v2: %+v", old)
	}

	h.deploy(fleet.Deployment{ID: "alarm-v3", Selector: "env=prod", Priority: 2, Apps: []fleet.AppVersion{{App: "alarm", Version: "3"}},
		Policy: fleet.Policy{Waves: []fleet.Wave{{Count: 1}, {Percent: 100}}}})
	d, ts = h.awaitDeployment("alarm-v3", fleet.DeploymentAborted)
	if !strings.Contains(d.Reason, "wave 1: 1 of 1 instances failed") {
		t.Errorf("abort reason %q", d.Reason)
	}
	byID := targetsByInstance(ts)
	var first, second string
	for id, tg := range byID {
		if tg.Wave == 0 {
			first = id
		} else {
			second = id
		}
	}
	testenv.Eventually(t, "the first wave's gateway rolled back by the fleet", func() bool {
		_, ts, _ := h.fleet.Deployment(h.ctx, "alarm-v3")
		tg := targetsByInstance(ts)[first]
		st, _ := h.gws[first].Status()
		return tg.State == fleet.TargetRolledBack && st.Revision == tg.Revision+1 && st.Outcome == app.OutcomeSucceeded
	})
	_, ts, _ = h.fleet.Deployment(h.ctx, "alarm-v3")
	byID = targetsByInstance(ts)
	if tg := byID[first]; tg.Code != app.CodeCrashLoop || !strings.Contains(tg.Reason, "exited at start") || tg.Previous != "alarm-v2" {
		t.Errorf("the rolled back target %+v: want the gateway's code and reason, previous alarm-v2", tg)
	}
	if v := runningVersion(h.gws[first]); v != "2" {
		t.Errorf("%s runs %q after the rollback, want 2", first, v)
	}
	if tg := byID[second]; tg.State != fleet.TargetCancelled || tg.Revision != 0 {
		t.Errorf("the second wave's target %+v, want cancelled, never sent", tg)
	}
	_, hist := h.gws[second].Status()
	for _, st := range hist {
		if st.Deployment == "alarm-v3" {
			t.Fatalf("%s received v3: %+v", second, st)
		}
	}
	if v := runningVersion(h.gws[second]); v != "2" {
		t.Errorf("%s runs %q, want 2", second, v)
	}
}
