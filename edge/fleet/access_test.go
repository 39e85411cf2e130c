package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestUsers: a user signs in with their password only; a wrong password
// and an unknown name get the same error; a changed role takes effect;
// short passwords and unknown roles are refused with what is wrong.
func TestUsers(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := h.fleet.SetUser(h.ctx, "ana", "correct horse battery", fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	u, err := h.fleet.SignIn(h.ctx, "ana", "correct horse battery")
	if err != nil || u.Name != "ana" || u.Role != fleet.RoleViewer {
		t.Fatalf("SignIn = %+v, %v", u, err)
	}
	_, wrong := h.fleet.SignIn(h.ctx, "ana", "correct horse battery!")
	_, unknown := h.fleet.SignIn(h.ctx, "bob", "correct horse battery")
	if !errors.Is(wrong, fleet.ErrDenied) || !errors.Is(unknown, fleet.ErrDenied) || wrong.Error() != unknown.Error() {
		t.Errorf("wrong password: %v; unknown user: %v (want the same ErrDenied)", wrong, unknown)
	}
	if _, err := h.fleet.SetUser(h.ctx, "ana", "another long password", fleet.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if _, err := h.fleet.SignIn(h.ctx, "ana", "correct horse battery"); !errors.Is(err, fleet.ErrDenied) {
		t.Errorf("the old password after a change: %v", err)
	}
	if u, err := h.fleet.User(h.ctx, "ana"); err != nil || u.Role != fleet.RoleOperator {
		t.Errorf("User = %+v, %v; want an operator", u, err)
	}
	for _, c := range []struct{ name, password, role string }{
		{"ana", "short", "viewer"},
		{"ana", "long enough password", "admin"},
		{"<script>", "long enough password", "viewer"},
	} {
		if _, err := h.fleet.SetUser(h.ctx, c.name, c.password, fleet.Role(c.role)); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("SetUser(%q, %q, %q) = %v, want ErrInvalid", c.name, c.password, c.role, err)
		}
	}
	us, err := h.fleet.Users(h.ctx)
	if err != nil || len(us) != 1 || us[0].Name != "ana" {
		t.Errorf("Users = %+v, %v", us, err)
	}
	a, err := h.fleet.Secret(h.ctx, "console")
	b, err2 := h.fleet.Secret(h.ctx, "console")
	if err != nil || err2 != nil || len(a) != 32 || !bytes.Equal(a, b) {
		t.Errorf("Secret twice: %x %v, %x %v", a, err, b, err2)
	}
}

// TestAudit: entries come back by day, newest first.
func TestAudit(t *testing.T) {
	h := newHarness(t, nil)
	day := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for i, action := range []string{"sign-in", "deploy", "pause"} {
		if err := h.fleet.Audit(h.ctx, fleet.AuditEntry{Time: day.Add(time.Duration(i) * time.Hour), Actor: "ana", Role: fleet.RoleOperator, Action: action, Object: "alarm-v1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.fleet.Audit(h.ctx, fleet.AuditEntry{Time: day.Add(-time.Minute), Actor: "bob", Action: "sign-in", Error: "denied"}); err != nil {
		t.Fatal(err)
	}
	es, err := h.fleet.AuditDay(h.ctx, day.Add(5*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Action)
	}
	if !slices.Equal(got, []string{"pause", "deploy", "sign-in"}) {
		t.Errorf("the day's entries %v, want pause, deploy, sign-in", got)
	}
	if es, _ := h.fleet.AuditDay(h.ctx, day.Add(-time.Hour)); len(es) != 1 || es[0].Actor != "bob" || es[0].Error != "denied" {
		t.Errorf("the day before: %+v", es)
	}
}

// TestQueryInstances: pages in id order with a cursor, filtered by label,
// presence and rollout, with the count of all that match; bad filters
// are refused by name.
func TestQueryInstances(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1")
	for i := range 7 {
		site := "a"
		if i%2 == 1 {
			site = "b"
		}
		h.gateway(fmt.Sprintf("gw-%d", i), map[string]string{"site": site}, nil)
	}
	if _, err := h.fleet.RegisterInstance(h.ctx, "gw-silent", map[string]string{"site": "a"}); err != nil {
		t.Fatal(err)
	}
	h.deploy(fleet.Deployment{ID: "v1", Selector: "site=a", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	h.awaitDeployment("v1", fleet.DeploymentRunning)
	testenv.Eventually(t, "the four site=a gateways online and current", func() bool {
		p, err := h.fleet.QueryInstances(h.ctx, fleet.InstanceQuery{Selector: "site=a", Presence: "online", Rollout: "current"})
		return err == nil && p.Matched == 4
	})
	var ids []string
	q := fleet.InstanceQuery{Limit: 3}
	for {
		p, err := h.fleet.QueryInstances(h.ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if p.Matched != 8 || len(p.Instances) > 3 {
			t.Fatalf("page after %q: %d of %d matched", q.After, len(p.Instances), p.Matched)
		}
		for _, v := range p.Instances {
			ids = append(ids, v.ID)
		}
		if p.Next == "" {
			break
		}
		q.After = p.Next
	}
	if len(ids) != 8 || !slices.IsSorted(ids) {
		t.Errorf("the pages gave %v", ids)
	}
	p, err := h.fleet.QueryInstances(h.ctx, fleet.InstanceQuery{Presence: "unknown"})
	if err != nil || p.Matched != 1 || p.Instances[0].ID != "gw-silent" {
		t.Errorf("presence unknown: %+v, %v", p, err)
	}
	for _, q := range []fleet.InstanceQuery{{Selector: "site=="}, {Presence: "asleep"}, {Rollout: "late"}} {
		if _, err := h.fleet.QueryInstances(h.ctx, q); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("QueryInstances(%+v) = %v, want ErrInvalid", q, err)
		}
	}
	in, err := h.fleet.Instance(h.ctx, "gw-0")
	if err != nil || in.Presence != "online" || in.Labels["site"] != "a" {
		t.Errorf("Instance(gw-0) = %+v, %v", in, err)
	}
	if _, err := h.fleet.Instance(h.ctx, "gw-none"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("Instance(gw-none) = %v, want ErrNotFound", err)
	}
}

// TestStatusHistory: the history keeps an instance's status changes,
// newest first, not its heartbeats, and at most the last 32.
func TestStatusHistory(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1", "2")
	h.gateway("gw-1", nil, nil)
	h.deploy(fleet.Deployment{ID: "v1", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	h.awaitDeployment("v1", fleet.DeploymentSucceeded)
	h.deploy(fleet.Deployment{ID: "v2", Priority: 1, Apps: []fleet.AppVersion{{App: "alarm", Version: "2"}}})
	h.awaitDeployment("v2", fleet.DeploymentSucceeded)
	var hist []app.Status
	testenv.Eventually(t, "gw-1's history ends with v2 succeeded", func() bool {
		var err error
		hist, err = h.fleet.StatusHistory(h.ctx, "gw-1")
		return err == nil && len(hist) > 0 && hist[0].Deployment == "v2" && hist[0].Outcome == app.OutcomeSucceeded
	})
	seen := map[string]bool{}
	for i, st := range hist {
		seen[st.Deployment+" "+string(st.Outcome)] = true
		if i > 0 && st.Revision > hist[i-1].Revision {
			t.Errorf("history not newest first: %d then %d", hist[i-1].Revision, st.Revision)
		}
	}
	if !seen["v1 succeeded"] || !seen["v2 succeeded"] {
		t.Errorf("history %v lacks v1's or v2's success", seen)
	}
	if _, err := h.fleet.StatusHistory(h.ctx, "gw-none"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("StatusHistory(gw-none) = %v", err)
	}
}

// TestRolloutChanges: a reader following the feed sees every target of
// a rollout reach its final state, and nothing again once it has.
func TestRolloutChanges(t *testing.T) {
	h := newHarness(t, nil)
	h.catalogue("1")
	for i := range 3 {
		h.gateway(fmt.Sprintf("gw-%d", i), nil, nil)
	}
	h.deploy(fleet.Deployment{ID: "v1", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}})
	var mark fleet.RolloutMark
	states := map[string]fleet.TargetState{}
	var dep fleet.DeploymentState
	testenv.Eventually(t, "the feed shows v1 succeeded on three instances", func() bool {
		ds, ts, m, err := h.fleet.RolloutChanges(h.ctx, mark, nil)
		if err != nil {
			t.Fatal(err)
		}
		mark = m
		for _, d := range ds {
			dep = d.State
		}
		for _, tg := range ts {
			states[tg.Instance] = tg.State
		}
		return dep == fleet.DeploymentSucceeded && len(states) == 3 && states["gw-0"] == fleet.TargetSucceeded && states["gw-1"] == fleet.TargetSucceeded && states["gw-2"] == fleet.TargetSucceeded
	})
	if ds, ts, _, err := h.fleet.RolloutChanges(h.ctx, mark, nil); err != nil || len(ds)+len(ts) != 0 {
		t.Errorf("after the end: %d deployments, %d targets, %v", len(ds), len(ts), err)
	}
}

// TestLogs: the fleet fetches an app's log lines from a gateway through
// the bus; an app the gateway lacks is ErrNotFound, and a gateway that
// does not answer is ErrNoAnswer when the context ends.
func TestLogs(t *testing.T) {
	h := newHarness(t, nil)
	g := h.gateway("gw-1", nil, nil)
	lines := []app.LogLine{{Time: time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC), Level: "INFO", Text: "started"}, {Text: "<script>alert(1)</script>"}}
	if err := g.SetLogs(h.ctx, map[string][]app.LogLine{"alarm": lines}); err != nil {
		t.Fatal(err)
	}
	got, err := h.fleet.Logs(h.ctx, "gw-1", app.LogsRequest{App: "alarm"})
	if err != nil || len(got.Lines) != 2 || got.Lines[1].Text != lines[1].Text {
		t.Fatalf("Logs = %+v, %v", got, err)
	}
	if _, err := h.fleet.Logs(h.ctx, "gw-1", app.LogsRequest{App: "other"}); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("an app the gateway lacks: %v, want ErrNotFound", err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := h.fleet.Logs(ctx, "gw-silent", app.LogsRequest{App: "alarm"}); !errors.Is(err, fleet.ErrNoAnswer) {
		t.Errorf("a gateway that does not answer: %v, want ErrNoAnswer", err)
	}
	for _, c := range []struct{ instance, app string }{{"../x", "alarm"}, {"gw-1", "a b"}} {
		if _, err := h.fleet.Logs(h.ctx, c.instance, app.LogsRequest{App: c.app}); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("Logs(%q, %q) = %v, want ErrInvalid", c.instance, c.app, err)
		}
	}
}
