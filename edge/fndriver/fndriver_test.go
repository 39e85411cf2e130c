package fndriver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicetest"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/fncall"
	"github.com/edgekit/edgekit/edge/fndriver"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/internal/testprograms"
	"github.com/edgekit/edgekit/invoke"
)

// thermometer is the thing model the test drivers serve.
const thermometer = `{"properties": [
  {"identifier": "temperature", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "-40", "max": "200", "unit": "°C"}}},
  {"identifier": "setpoint", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "0", "max": "100"}}}],
 "services": [
  {"identifier": "reset", "callType": "sync", "outputData": [{"identifier": "ok", "dataType": {"type": "bool"}}]},
  {"identifier": "heat", "callType": "sync", "inputData": [{"identifier": "to", "dataType": {"type": "double"}}], "outputData": [{"identifier": "ok", "dataType": {"type": "bool"}}]},
  {"identifier": "crash", "callType": "sync"},
  {"identifier": "hang", "callType": "sync"}],
 "events": [{"identifier": "overheat", "type": "alert", "outputData": [{"identifier": "temperature", "dataType": {"type": "double"}}]}]}`

// binDir holds the native Go test function, whose behaviour driver is the
// thermometers of function/testdata/drivers in Go.
var binDir string

func TestMain(m *testing.M) {
	testprograms.Main(m, &binDir, "github.com/edgekit/edgekit/function/internal/testfunctions/native")
}

// language is a runtime the test driver is written in.
type language struct {
	name    string
	runtime function.Runtime
	dir     string
	handler string
	env     map[string]string
}

func languages(t testing.TB) []language {
	out := []language{{"go", function.RuntimeExecutable, binDir, "native", map[string]string{"TEST_BEHAVIOUR": "driver"}}}
	for _, l := range []language{
		{"node", function.RuntimeNode, "node", "thermometer.handler", nil},
		{"python", function.RuntimePython, "python", "thermometer.handler", nil},
	} {
		testenv.Tool(t, map[function.Runtime]string{function.RuntimeNode: "node", function.RuntimePython: "python3"}[l.runtime])
		dir, err := filepath.Abs(filepath.Join("..", "..", "function", "testdata", "drivers", l.dir))
		if err != nil {
			t.Fatal(err)
		}
		l.dir = dir
		out = append(out, l)
	}
	return out
}

// rig is a function host whose functions' calls the gateway's call server
// answers, with the driver set behind it.
type rig struct {
	host *function.Host
	set  *fndriver.Set
	n    atomic.Int32
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{}
	b := membus.New(nil)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	var srv *fncall.Server
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	if _, bench := t.(*testing.B); bench {
		log = slog.New(slog.DiscardHandler) // a benchmark prints what it logs
	}
	host, err := function.New(&function.Options{Logger: log, Calls: func(ctx context.Context, c *function.Call) ([]byte, error) { return srv.Serve(ctx, c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := host.Close(ctx); err != nil {
			t.Errorf("host Close: %v", err)
		}
	})
	r.host, r.set = host, fndriver.NewSet(host, log)
	srv = fncall.New(b, host, &fncall.Options{Drivers: r.set.Serve})
	return r
}

// deploy deploys the test driver in l as a continuous function of one
// instance under a fresh name, with the driver configuration config.
func (r *rig) deploy(t testing.TB, l language, config string, timeout time.Duration) string {
	t.Helper()
	name := fmt.Sprintf("thermo-%s-%d", l.name, r.n.Add(1))
	s := function.Spec{Name: name, Version: "1", Runtime: l.runtime, API: function.APINative, Handler: l.handler, CodeDir: l.dir, Env: l.env,
		Mode: function.Continuous, MinInstances: 1, MaxInstances: 1, Timeout: function.Duration(timeout), Config: json.RawMessage(config)}
	if err := r.host.Deploy(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.host.Remove(context.Background(), name) })
	return name
}

func model(t testing.TB) *device.Model {
	t.Helper()
	m, err := device.ParseTSL([]byte(thermometer))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestConformance: a Go driver (package function/native), a Node.js one
// and a Python one, out of process, pass the driver conformance suite
// through the adapter.
func TestConformance(t *testing.T) {
	for _, l := range languages(t) {
		t.Run(l.name, func(t *testing.T) {
			r := newRig(t)
			dev := func(config string) func(t *testing.T, name string) device.Device {
				return func(t *testing.T, name string) device.Device {
					return device.Device{Name: name, Model: model(t), Config: json.RawMessage(config)}
				}
			}
			devicetest.Run(t, devicetest.Harness{
				New: func(t *testing.T) device.Driver {
					return r.set.Driver(r.deploy(t, l, `{"interval": 10}`, 0))
				},
				Device: dev(`{"start": 21.5}`),
				Writes: map[string]any{"setpoint": 42},
				Slow:   dev(`{"slow": true}`),
			})
		})
	}
}

// manager is a device manager whose notices the test watches.
type manager struct {
	*device.Manager
	mu      sync.Mutex
	reports map[string]int // by device
	events  []device.Notice
	states  []device.Notice
}

func newManager(t *testing.T) *manager {
	m := &manager{reports: map[string]int{}}
	m.Manager = device.NewManager(&device.ManagerOptions{Publish: func(_ context.Context, n device.Notice) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		switch n.Kind {
		case device.PropertiesNotice:
			m.reports[n.Device]++
		case device.EventNotice:
			m.events = append(m.events, n)
		case device.StateNotice:
			m.states = append(m.states, n)
		}
		return nil
	}})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func (m *manager) reported(dev string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reports[dev]
}

func (m *manager) state(t *testing.T, dev string) device.State {
	sh, err := m.Shadow(dev)
	if err != nil {
		t.Fatal(err)
	}
	return sh.State
}

// wentOffline reports whether dev has gone offline since the n-th state
// notice.
func (m *manager) wentOffline(dev string, since int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.states[since:] {
		if n.Device == dev && n.State == device.Offline {
			return true
		}
	}
	return false
}

func (m *manager) noticesSoFar() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.states)
}

// TestReportsEventsAndState: a driver's reports and events reach the
// device manager checked against the model, and its devices are online
// once attached.
func TestReportsEventsAndState(t *testing.T) {
	ctx := context.Background()
	for _, l := range languages(t) {
		t.Run(l.name, func(t *testing.T) {
			r, m := newRig(t), newManager(t)
			fn := r.deploy(t, l, `{"interval": 20, "threshold": 80}`, 0)
			if err := m.AddDriver(ctx, fn, r.set.Driver(fn), nil); err != nil {
				t.Fatal(err)
			}
			if err := m.Attach(ctx, fn, device.Device{Name: "t1", Model: model(t), Config: json.RawMessage(`{"start": 25}`)}, nil); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, "t1 online and reporting", func() bool { return m.state(t, "t1") == device.Online && m.reported("t1") >= 3 })
			sh, _ := m.Shadow("t1")
			if v := sh.Properties["temperature"].Reported; v != 25.0 {
				t.Errorf("temperature reported as %#v, want 25.0", v)
			}
			out, err := m.Call(ctx, "t1", "heat", map[string]any{"to": 90.5})
			if err != nil || out["ok"] != true {
				t.Fatalf("heat: %v %v", out, err)
			}
			testenv.Eventually(t, "the overheat event", func() bool {
				m.mu.Lock()
				defer m.mu.Unlock()
				return len(m.events) > 0 && m.events[0].Event == "overheat" && m.events[0].Values["temperature"] == 90.5
			})
			got, err := m.Get(ctx, "t1", []string{"temperature", "setpoint"})
			if err != nil || got["temperature"].Value != 90.5 || got["setpoint"].Value != int64(50) {
				t.Fatalf("get: %+v %v", got, err)
			}
			if _, err := m.Set(ctx, "t1", map[string]any{"setpoint": 101}); !errors.Is(err, device.ErrInvalidValue) {
				t.Errorf("a setpoint of 101 against a max of 100: %v, want ErrInvalidValue", err)
			}

			// What the driver itself says wrongly is refused, naming why.
			ask := func(event string) map[string]any {
				t.Helper()
				resp, err := r.host.Invoke(ctx, fn, invoke.Request{Payload: []byte(event)})
				if err != nil {
					t.Fatalf("%s: %v", event, err)
				}
				var out map[string]any
				if err := json.Unmarshal(resp.Payload, &out); err != nil {
					t.Fatalf("%s: %s", event, resp.Payload)
				}
				return out
			}
			if out := ask(`{"do": "report", "device": "t1", "properties": {"temperature": 500, "setpoint": 7}}`); out["refused"].(map[string]any)["temperature"] == nil {
				t.Errorf("a temperature of 500 against a max of 200 was taken: %v", out)
			}
			if out := ask(`{"do": "report", "device": "not-mine", "properties": {"temperature": 1}}`); out["type"] != "UnknownDevice" {
				t.Errorf("a report of a device not the driver's: %v, want UnknownDevice", out)
			}
			if out := ask(`{"do": "event", "device": "t1", "event": "explosion"}`); out["type"] != "InvalidValue" && out["type"] != "UnknownProperty" {
				t.Errorf("an event the model lacks: %v, want it refused", out)
			}
			if out := ask(`{"do": "state", "device": "t1", "state": "sleeping"}`); out["type"] != "BadRequest" {
				t.Errorf("state sleeping: %v, want BadRequest", out)
			}
			if out := ask(`{"do": "state", "device": "t1", "state": "degraded", "cause": "battery low"}`); out["ok"] != true {
				t.Fatalf("state degraded: %v", out)
			}
			if sh, _ := m.Shadow("t1"); sh.State != device.Degraded || sh.Cause != "battery low" {
				t.Errorf("after the driver said degraded: %s (%s)", sh.State, sh.Cause)
			}
		})
	}
}

// TestNotADriver: a function not bound as a driver that calls the driver
// methods is refused.
func TestNotADriver(t *testing.T) {
	for _, l := range languages(t) {
		t.Run(l.name, func(t *testing.T) {
			r := newRig(t)
			fn := r.deploy(t, l, `{}`, 0)
			resp, err := r.host.Invoke(context.Background(), fn, invoke.Request{Payload: []byte(`{"do": "report", "device": "t1", "properties": {"temperature": 1}}`)})
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			_ = json.Unmarshal(resp.Payload, &out)
			if out["type"] != "Forbidden" || !strings.Contains(fmt.Sprint(out["message"]), "not bound as a device driver") {
				t.Errorf("a report from a function no driver is served by: %s, want Forbidden naming why", resp.Payload)
			}
		})
	}
}

// TestCrashAndHang: a driver process that crashes is restarted by the
// function host, and its devices go offline and come back online; one
// that hangs is replaced when its request times out, and neither holds up
// the other driver's devices.
func TestCrashAndHang(t *testing.T) {
	ctx := context.Background()
	ls := languages(t)
	r, m := newRig(t), newManager(t)
	var fns []string
	for i, l := range ls {
		fn := r.deploy(t, l, `{"interval": 20}`, 2*time.Second)
		if err := m.AddDriver(ctx, fn, r.set.Driver(fn), nil); err != nil {
			t.Fatal(err)
		}
		if err := m.Attach(ctx, fn, device.Device{Name: fmt.Sprintf("dev-%d", i), Model: model(t)}, nil); err != nil {
			t.Fatal(err)
		}
		fns = append(fns, fn)
	}
	for i := range fns {
		dev := fmt.Sprintf("dev-%d", i)
		testenv.Eventually(t, dev+" online", func() bool { return m.state(t, dev) == device.Online })
	}
	for i, l := range ls {
		dev, other := fmt.Sprintf("dev-%d", i), fmt.Sprintf("dev-%d", (i+1)%len(ls))
		for _, service := range []string{"crash", "hang"} {
			t.Run(l.name+"/"+service, func(t *testing.T) {
				since := m.noticesSoFar()
				done := make(chan error, 1)
				go func() {
					_, err := m.Call(ctx, dev, service, nil)
					done <- err
				}()
				if service == "hang" {
					// While it hangs, the other driver's device answers.
					if len(ls) > 1 {
						if _, err := m.Get(ctx, other, []string{"temperature"}); err != nil {
							t.Errorf("%s while %s's driver hangs: %v", other, dev, err)
						}
					}
				}
				if err := <-done; err == nil {
					t.Errorf("%s: the call succeeded", service)
				}
				testenv.EventuallyWithin(t, dev+" offline", 30*time.Second, func() bool { return m.wentOffline(dev, since) })
				before := m.reported(dev)
				testenv.EventuallyWithin(t, dev+" back online and reporting", 30*time.Second, func() bool {
					return m.state(t, dev) == device.Online && m.reported(dev) > before
				})
				if _, err := m.Get(ctx, dev, []string{"temperature"}); err != nil {
					t.Errorf("reading %s after its driver came back: %v", dev, err)
				}
			})
		}
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
