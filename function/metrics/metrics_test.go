package metrics_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/metrics"
	"github.com/edgekit/edgekit/invoke"
)

// value finds one sample of a gathered family by its labels.
func value(t *testing.T, fams []*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			return m
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}

func TestCollector(t *testing.T) {
	ctx := context.Background()
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	_ = h.Register("h", function.HandlerFunc(func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		if string(req.Payload) == "fail" {
			return invoke.Response{}, errors.New("failed")
		}
		return invoke.Response{Payload: req.Payload}, nil
	}))
	if err := h.Deploy(ctx, function.Spec{Name: "inproc", Version: "1", Runtime: function.RuntimeGo, Handler: "h"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b", "fail"} {
		_, _ = h.Invoke(ctx, "inproc", invoke.Request{Payload: []byte(p)})
	}
	// An out-of-process function, for the per-instance figures.
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "fn"), "../internal/testfunctions/native").CombinedOutput(); err != nil {
		t.Fatalf("building the test function: %v\n%s", err, out)
	}
	if err := h.Deploy(ctx, function.Spec{Name: "proc", Version: "1", Runtime: function.RuntimeExecutable, API: function.APINative, Handler: "fn", CodeDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Invoke(ctx, "proc", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, h); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]string{"function": "inproc"}
	if v := value(t, fams, "edgekit_function_invocations_total", in).GetCounter().GetValue(); v != 3 {
		t.Errorf("invocations %v, want 3", v)
	}
	if v := value(t, fams, "edgekit_function_errors_total", in).GetCounter().GetValue(); v != 1 {
		t.Errorf("errors %v, want 1", v)
	}
	if c := value(t, fams, "edgekit_function_duration_seconds", in).GetHistogram().GetSampleCount(); c != 3 {
		t.Errorf("histogram count %d, want 3", c)
	}
	if v := value(t, fams, "edgekit_function_instances", map[string]string{"function": "proc", "state": "idle"}).GetGauge().GetValue(); v != 1 {
		t.Errorf("idle instances of proc: %v", v)
	}
	if rss := value(t, fams, "edgekit_function_instance_resident_bytes", map[string]string{"function": "proc"}).GetGauge().GetValue(); rss < 1<<20 {
		t.Errorf("resident bytes %v: not read from /proc", rss)
	}
	value(t, fams, "edgekit_function_instance_cpu_seconds_total", map[string]string{"function": "proc"})
	if err := metrics.Register(reg, h); err == nil {
		t.Error("registering the same host twice on one registry was accepted")
	}
}
