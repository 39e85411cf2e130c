package function_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// changes records what a host's OnChange saw.
type changes struct {
	mu  sync.Mutex
	all []function.Status
}

func (c *changes) record(s function.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, s)
}

// last returns the latest status seen for name.
func (c *changes) last(name string) (function.Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.all) - 1; i >= 0; i-- {
		if c.all[i].Name == name {
			return c.all[i], true
		}
	}
	return function.Status{}, false
}

// TestApply: Apply makes a whole set the host's: new functions deploy,
// changed ones are replaced, those left out are removed; a wrong spec
// anywhere changes nothing; a version that cannot start fails with the
// reason (the one before serves on) while the rest apply; each change and
// a crash loop reach OnChange with the phase.
func TestApply(t *testing.T) {
	ch := &changes{}
	h := newHost(t, &function.Options{OnChange: ch.record})
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		_ = h.Register(name, function.HandlerFunc(func(context.Context, invoke.Request) (invoke.Response, error) {
			return invoke.Response{Payload: []byte(`"` + name + `"`)}, nil
		}))
	}
	goSpec := func(name, handler, version string) function.Spec {
		return function.Spec{Name: name, Version: version, Runtime: function.RuntimeGo, Handler: handler}
	}
	if err := h.Apply(ctx, []function.Spec{goSpec("f", "a", "1"), goSpec("g", "a", "1"), lambdaSpec("svc", "echo")}); err != nil {
		t.Fatal(err)
	}
	if names := statusNames(h.List()); !slices.Equal(names, []string{"f", "g", "svc"}) {
		t.Fatalf("after the first Apply: %v", names)
	}
	testenv.Eventually(t, "OnChange saw svc running", func() bool {
		s, ok := ch.last("svc")
		return ok && s.Phase == function.PhaseRunning && s.Version == "1"
	})

	for _, tc := range []struct {
		specs []function.Spec
		says  string
	}{
		{[]function.Spec{goSpec("f", "a", "1"), {Name: "bad name!", Version: "1", Runtime: function.RuntimeGo, Handler: "a"}}, "name"},
		{[]function.Spec{goSpec("f", "a", "1"), goSpec("f", "b", "2")}, "twice"},
	} {
		if err := h.Apply(ctx, tc.specs); !errors.Is(err, function.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Apply: %v, want ErrInvalidSpec naming %q", err, tc.says)
		}
	}
	if names := statusNames(h.List()); !slices.Equal(names, []string{"f", "g", "svc"}) {
		t.Fatalf("refused Applys changed the set: %v", names)
	}

	// f moves to b's handler; g goes; svc's v2 exits at start; new is a
	// handler nobody registered; crash keeps exiting.
	bad := lambdaSpec("svc", "exit-at-start")
	bad.Version = "2"
	crash := lambdaSpec("crash", "exit-soon")
	crash.Mode = function.Continuous
	err := h.Apply(ctx, []function.Spec{goSpec("f", "b", "2"), bad, goSpec("new", "nobody", "1"), crash})
	if err == nil || !strings.Contains(err.Error(), "svc version 2") || !errors.Is(err, function.ErrUnknownHandler) {
		t.Errorf("Apply with two failing deploys: %v", err)
	}
	if resp, err := h.Invoke(ctx, "f", invoke.Request{}); err != nil || string(resp.Payload) != `"b"` {
		t.Errorf("f after Apply: %q %v", resp.Payload, err)
	}
	if _, err := h.Invoke(ctx, "g", invoke.Request{}); !errors.Is(err, invoke.ErrNotFound) {
		t.Errorf("g after Apply left it out: %v, want ErrNotFound", err)
	}
	if st, err := h.Status("svc"); err != nil || st.Version != "1" || st.Phase != function.PhaseRunning || !strings.Contains(st.DeployError, "exited") {
		t.Errorf("svc after a failed v2: %+v %v, want v1 running with the deploy error", st, err)
	}
	if st, err := h.Status("new"); err != nil || st.Phase != function.PhaseFailed || !strings.Contains(st.DeployError, "nobody") {
		t.Errorf("new, whose handler nobody registered: %+v %v, want failed with the reason", st, err)
	}
	if _, err := h.Invoke(ctx, "new", invoke.Request{}); !errors.Is(err, invoke.ErrNotFound) {
		t.Errorf("invoking a failed function: %v, want ErrNotFound", err)
	}
	testenv.Eventually(t, "OnChange saw g removed, svc's deploy error, new failed and crash crash-looping", func() bool {
		g, _ := ch.last("g")
		svc, _ := ch.last("svc")
		n, _ := ch.last("new")
		c, _ := ch.last("crash")
		return g.Phase == function.PhaseRemoved && svc.DeployError != "" && n.Phase == function.PhaseFailed && c.Phase == function.PhaseCrashLoop
	})

	// Applied again with a working svc and nothing else, all but svc go.
	fixed := lambdaSpec("svc", "echo")
	fixed.Version = "3"
	if err := h.Apply(ctx, []function.Spec{fixed}); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Status("svc"); st.Version != "3" || st.DeployError != "" || st.Phase != function.PhaseRunning {
		t.Errorf("svc v3: %+v", st)
	}
	if names := statusNames(h.List()); !slices.Equal(names, []string{"svc"}) {
		t.Errorf("after the last Apply: %v", names)
	}
	_ = h.Close(ctx)
	if err := h.Apply(ctx, nil); !errors.Is(err, function.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
}

func statusNames(ss []function.Status) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}
