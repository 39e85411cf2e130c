package fleet_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/internal/testenv"
)

func succeed(string, *app.Deployment) error { return nil }

// TestLostDocumentIsSentAgain: a gateway that missed its document (the
// broker lost the retained message, or the gateway was not subscribed)
// reports the older revision it has, and the fleet sends the document
// again.
func TestLostDocumentIsSentAgain(t *testing.T) {
	h := newHarness(t, &fleet.Options{RepublishAfter: 1})
	h.catalogue("1")
	g := h.gateway("gw-1", map[string]string{"env": "prod"}, succeed)
	_ = g.Stop(h.ctx) // deaf: the document goes nowhere
	h.deploy(fleet.Deployment{ID: "v1", Selector: "env=prod", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	testenv.Eventually(t, "the document sent", func() bool {
		_, ts, _ := h.fleet.Deployment(h.ctx, "v1")
		return len(ts) == 1 && ts[0].Revision == 1
	})
	// The broker "lost" it: the retained copy is cleared.
	if err := h.bus.Publish(h.ctx, &bus.Message{Topic: app.DesiredTopic("gw-1"), Retain: true, QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	g2 := h.gateway("gw-1", map[string]string{"env": "prod"}, succeed)
	// Its heartbeat says revision 0: nothing taken.
	b, _ := json.Marshal(app.Status{Schema: 1, Instance: "gw-1", Outcome: app.OutcomeSucceeded})
	_ = h.bus.Publish(h.ctx, &bus.Message{Topic: app.StatusTopic("gw-1"), Payload: b, QoS: bus.AtLeastOnce, Retain: true})
	h.awaitDeployment("v1", fleet.DeploymentSucceeded)
	if v := runningVersion(g2); v != "1" {
		t.Fatalf("the gateway runs %q, want 1", v)
	}
}

// TestOfflineIsUnknown: a gateway that goes offline while being updated
// shows unknown, never succeeded, and comes back to succeeded when it
// reports.
func TestOfflineIsUnknown(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1")
	g := h.gateway("gw-1", map[string]string{"env": "prod"}, succeed)
	_ = g.Stop(h.ctx)
	if err := g.Presence(h.ctx, false); err != nil {
		t.Fatal(err)
	}
	h.deploy(fleet.Deployment{ID: "v1", Selector: "env=prod", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	testenv.Eventually(t, "the offline instance shown unknown", func() bool {
		_, ts, _ := h.fleet.Deployment(h.ctx, "v1")
		return len(ts) == 1 && ts[0].State == fleet.TargetUnknown
	})
	ins, _ := h.fleet.Instances(h.ctx)
	if len(ins) != 1 || ins[0].Presence != "offline" || ins[0].Current {
		t.Fatalf("instance view %+v: want offline, not current", ins)
	}
	if d, _, _ := h.fleet.Deployment(h.ctx, "v1"); d.State != fleet.DeploymentRunning {
		t.Fatalf("deployment %s while its only instance is unknown", d.State)
	}
	h.gateway("gw-1", map[string]string{"env": "prod"}, succeed) // back: it takes the retained document
	h.awaitDeployment("v1", fleet.DeploymentSucceeded)
}

// TestBadRequests: what the catalogue and deployments refuse, each
// naming the problem, and nothing accepted before is lost.
func TestBadRequests(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1")
	bad := functionVersion("2")
	bad.Function.Package.SHA256 = "not-a-digest"
	other := functionVersion("1")
	other.Config = []byte(`{"threshold":99}`)
	for name, c := range map[string]struct {
		err  error
		want string
		call func() error
	}{
		"unknown app": {fleet.ErrNotFound, "app nothing", func() error {
			_, err := h.fleet.AddVersion(h.ctx, "nothing", functionVersion("1"))
			return err
		}},
		"bad digest": {app.ErrInvalid, "sha256", func() error { _, err := h.fleet.AddVersion(h.ctx, "alarm", bad); return err }},
		"changed version": {fleet.ErrExists, "immutable", func() error {
			_, err := h.fleet.AddVersion(h.ctx, "alarm", other)
			return err
		}},
		"unknown version": {fleet.ErrNotFound, "version alarm/9", func() error {
			_, err := h.fleet.Deploy(h.ctx, fleet.Deployment{ID: "d", Apps: []fleet.AppVersion{{App: "alarm", Version: "9"}}})
			return err
		}},
		"bad selector": {fleet.ErrInvalid, "requirement 2", func() error {
			_, err := h.fleet.Deploy(h.ctx, fleet.Deployment{ID: "d", Selector: "env=prod,=x", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
			return err
		}},
		"bad policy": {fleet.ErrInvalid, "policy.waves[0]", func() error {
			_, err := h.fleet.Deploy(h.ctx, fleet.Deployment{ID: "d", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}, Policy: fleet.Policy{Waves: []fleet.Wave{{}}}})
			return err
		}},
		"bad kind": {fleet.ErrInvalid, "kind", func() error { _, err := h.fleet.CreateApp(h.ctx, fleet.App{Name: "x", Kind: "vm"}); return err }},
		"kind changed": {fleet.ErrExists, "function app", func() error {
			_, err := h.fleet.CreateApp(h.ctx, fleet.App{Name: "alarm", Kind: app.KindContainer})
			return err
		}},
		"config of nobody": {fleet.ErrNotFound, "instance gw-9", func() error {
			_, err := h.fleet.SetConfig(h.ctx, "alarm", fleet.Scope{Instance: "gw-9"}, []byte(`{}`))
			return err
		}},
		"config not an object": {fleet.ErrInvalid, "JSON object", func() error {
			_, _ = h.fleet.SetGroup(h.ctx, "all", "")
			_, err := h.fleet.SetConfig(h.ctx, "alarm", fleet.Scope{Group: "all"}, []byte(`[1]`))
			return err
		}},
		"bad label": {fleet.ErrInvalid, "label", func() error {
			_, err := h.fleet.RegisterInstance(h.ctx, "gw-1", map[string]string{"env": "has space"})
			return err
		}},
		"pause a finished one": {fleet.ErrState, "", func() error { return h.fleet.Pause(h.ctx, "nothing", "") }},
	} {
		err := c.call()
		if name == "pause a finished one" {
			if !errors.Is(err, fleet.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", name, err)
			}
			continue
		}
		if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %v naming %q", name, err, c.err, c.want)
		}
	}
	vs, err := h.fleet.Versions(h.ctx, "alarm")
	if err != nil || len(vs) != 1 || string(vs[0].Version.Config) != `{"threshold":80,"unit":"C"}` {
		t.Fatalf("the version accepted before: %+v %v", vs, err)
	}
	// A selector that matches nothing is accepted: it reaches instances
	// that match it later.
	if _, err := h.fleet.Deploy(h.ctx, fleet.Deployment{ID: "nobody", Selector: "site=moon", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}}); err != nil {
		t.Fatal(err)
	}
	h.awaitDeployment("nobody", fleet.DeploymentSucceeded)
	g := h.gateway("gw-moon", map[string]string{"site": "moon"}, succeed)
	testenv.Eventually(t, "a later instance the selector matches gets the deployment", func() bool { return runningVersion(g) == "1" })
}

// TestConfigChange: a group's override, then an instance's, reach the
// running gateway as new revisions of the same deployment; the instance's
// comes last.
func TestConfigChange(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1")
	g := h.gateway("gw-1", map[string]string{"env": "prod"}, succeed)
	h.deploy(fleet.Deployment{ID: "v1", Selector: "env=prod", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	h.awaitDeployment("v1", fleet.DeploymentSucceeded)
	config := func() string {
		_, d := g.Running()
		if d == nil {
			return ""
		}
		a, _ := d.Find("alarm")
		c, err := a.Resolve()
		if err != nil {
			return err.Error()
		}
		return string(c)
	}
	if _, err := h.fleet.SetGroup(h.ctx, "prod", "env=prod"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.fleet.SetConfig(h.ctx, "alarm", fleet.Scope{Group: "prod"}, []byte(`{"threshold":90,"notify":{"topic":"alarms"}}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the group's override on the gateway", func() bool {
		return config() == `{"notify":{"topic":"alarms"},"threshold":90,"unit":"C"}`
	})
	if _, err := h.fleet.SetConfig(h.ctx, "alarm", fleet.Scope{Instance: "gw-1"}, []byte(`{"threshold":95,"unit":null}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the instance's override over the group's", func() bool {
		return config() == `{"notify":{"topic":"alarms"},"threshold":95}`
	})
	st, _ := g.Status()
	if st.Deployment != "v1" || st.Revision != 3 {
		t.Fatalf("status %s revision %d, want v1 revision 3", st.Deployment, st.Revision)
	}
}

// TestOfflineWill: a gateway's offline Will carries the time it
// connected, before the online it follows; the fleet goes by the order it
// receives them, and shows the gateway offline.
func TestOfflineWill(t *testing.T) {
	h := newHarness(t, nil)
	connected := time.Now().UTC()
	g := h.gateway("gw-1", nil, succeed)
	will, _ := json.Marshal(app.Presence{Instance: "gw-1", Online: false, Time: connected.Add(-time.Second)})
	_ = g.Stop(h.ctx)
	if err := h.bus.Publish(h.ctx, &bus.Message{Topic: app.PresenceTopic("gw-1"), Payload: will, QoS: bus.AtLeastOnce, Retain: true}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the gateway shown offline", func() bool {
		ins, _ := h.fleet.Instances(h.ctx)
		return len(ins) == 1 && ins[0].Presence == "offline"
	})
}
