package fncall_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/fncall"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/internal/testprograms"
	"github.com/edgekit/edgekit/invoke"
)

// binDir holds the native Go test function (function's own, whose api
// behaviour makes the call its event names).
var binDir string

func TestMain(m *testing.M) {
	testprograms.Main(m, &binDir, "github.com/edgekit/edgekit/function/internal/testfunctions/native")
}

// gateway is the parts a function's calls reach: a function host whose
// calls the server answers, the bus, and a device manager with a
// simulated boiler.
type gateway struct {
	host    *function.Host
	bus     bus.Bus
	srv     *fncall.Server
	devices *device.Manager
	rt      runtime
}

// runtime is a language the test function is written in: the native Go
// test function's api behaviour, and testdata's api handlers for Node.js
// and Python, which make the same calls and answer in the same shape.
type runtime struct {
	name    string
	runtime function.Runtime
	codeDir string
	handler string
	env     map[string]string
}

func runtimes(t testing.TB) []runtime {
	t.Helper()
	rts := []runtime{{name: "go", runtime: function.RuntimeExecutable, codeDir: binDir, handler: "native", env: map[string]string{"TEST_BEHAVIOUR": "api"}}}
	for _, rt := range []runtime{
		{name: "node", runtime: function.RuntimeNode, codeDir: "node", handler: "api.handler"},
		{name: "python", runtime: function.RuntimePython, codeDir: "python", handler: "api.handler"},
	} {
		dir, err := filepath.Abs(filepath.Join("..", "..", "function", "testdata", rt.codeDir))
		if err != nil {
			t.Fatal(err)
		}
		rt.codeDir = dir
		rts = append(rts, rt)
	}
	return rts
}

// eachRuntime runs test for each runtime on each bus (membus, and mqttbus
// through a Mosquitto of its own).
func eachRuntime(t *testing.T, test func(t *testing.T, g *gateway)) {
	eachRuntimeIn(t, runtimes(t), test)
}

// eachRuntimeIn is eachRuntime for the runtimes rts.
func eachRuntimeIn(t *testing.T, rts []runtime, test func(t *testing.T, g *gateway)) {
	for _, rt := range rts {
		t.Run(rt.name, func(t *testing.T) {
			if rt.runtime == function.RuntimeNode {
				testenv.Tool(t, "node")
			} else if rt.runtime == function.RuntimePython {
				testenv.Tool(t, "python3")
			}
			brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
				g := newGateway(t, b)
				g.rt = rt
				test(t, g)
			})
		})
	}
}

func newGateway(t testing.TB, b bus.Bus) *gateway {
	t.Helper()
	ctx := context.Background()
	var srv *fncall.Server
	host, err := function.New(&function.Options{Calls: func(ctx context.Context, c *function.Call) ([]byte, error) { return srv.Serve(ctx, c) }})
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
	srv = fncall.New(b, host, nil)
	m := device.NewManager(nil)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if err := m.AddDriver(ctx, "sim", sim.New(), nil); err != nil {
		t.Fatal(err)
	}
	tsl, err := os.ReadFile("../../device/testdata/boiler.tsl.json")
	if err != nil {
		t.Fatal(err)
	}
	model, err := device.ParseTSL(tsl)
	if err != nil {
		t.Fatal(err)
	}
	for name, room := range map[string]string{"boiler-1": "cellar", "boiler-2": "attic", "meter-1": "cellar"} {
		if err := m.Attach(ctx, "sim", device.Device{Name: name, Model: model, Config: json.RawMessage(`{"values": {"temperature": 60, "setpoint": 50}}`),
			Labels: map[string]string{"room": room, "productKey": "pk1"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetDevices(m)
	return &gateway{host: host, bus: b, srv: srv, devices: m}
}

// deploy deploys the test function of g's runtime under name with perms.
func (g *gateway) deploy(t testing.TB, name string, perms function.Permissions, config string) {
	t.Helper()
	g.deploySpec(t, name, perms, config, 0)
}

func (g *gateway) deploySpec(t testing.TB, name string, perms function.Permissions, config string, timeout time.Duration) {
	t.Helper()
	s := function.Spec{Name: name, Version: "1", Runtime: g.rt.runtime, API: function.APINative, Handler: g.rt.handler, CodeDir: g.rt.codeDir,
		Env: g.rt.env, Permissions: perms}
	if config != "" {
		s.Config = json.RawMessage(config)
	}
	s.Timeout = function.Duration(timeout)
	if err := g.host.Deploy(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

type apiError struct {
	Type, Message, Is string
	Stack             []string
}

// call invokes fn with an api event and returns the call's answer or its
// error.
func (g *gateway) call(t testing.TB, fn, event string) (json.RawMessage, *apiError) {
	t.Helper()
	resp, err := g.host.Invoke(context.Background(), fn, invoke.Request{Payload: []byte(event)})
	if err != nil {
		t.Fatalf("%s %s: %v", fn, event, err)
	}
	var a struct {
		Answer json.RawMessage
		Error  *apiError
	}
	if err := json.Unmarshal(resp.Payload, &a); err != nil {
		t.Fatalf("%s: %q: %v", event, resp.Payload, err)
	}
	return a.Answer, a.Error
}

func refused(t *testing.T, what string, e *apiError, is string, says ...string) {
	t.Helper()
	if e == nil || e.Is != is {
		t.Errorf("%s: %+v, want %s", what, e, is)
		return
	}
	for _, s := range says {
		if !strings.Contains(e.Message, s) {
			t.Errorf("%s: %q does not say %q", what, e.Message, s)
		}
	}
}

// TestPublish: a function publishes under its own prefix and on what its
// permissions list, with its name on each message; the gateway's topics,
// the devices' reports and forged gateway properties are refused
// whatever it lists; bad topics and QoS are refused naming them. On
// membus and through Mosquitto.
func TestPublish(t *testing.T) {
	eachRuntime(t, func(t *testing.T, g *gateway) {
		b := g.bus
		got := make(chan *bus.Message, 10)
		if _, err := b.Subscribe(context.Background(), "#", func(_ context.Context, m *bus.Message) { got <- m }, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
		g.deploy(t, "alarm", function.Permissions{Publish: []string{"alerts/+/high", "edgekit/#", "devices/+/properties"}}, "")

		for _, topic := range []string{"outputs/alarm/x", "alerts/boiler-1/high"} {
			if _, e := g.call(t, "alarm", `{"call":"publish","topic":"`+topic+`","payload":"hot","qos":1}`); e != nil {
				t.Fatalf("publish on %s: %+v", topic, e)
			}
			select {
			case m := <-got:
				from, _ := m.Property("from")
				fn, _ := m.Property("edgekit-function")
				if m.Topic != topic || string(m.Payload) != "hot" || from == "" || fn != "alarm" {
					t.Errorf("published %s %q from=%q function=%q", m.Topic, m.Payload, from, fn)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("nothing arrived on %s", topic)
			}
		}

		_, e := g.call(t, "alarm", `{"call":"publish","topic":"outputs/other/x"}`)
		refused(t, "another function's prefix", e, "Forbidden", "outputs/other/x", "permissions.publish")
		_, e = g.call(t, "alarm", `{"call":"publish","topic":"edgekit/instances/gw/status"}`)
		refused(t, "the gateway's status", e, "Forbidden", "edgekit/instances/gw/status", "gateway's own")
		_, e = g.call(t, "alarm", `{"call":"publish","topic":"devices/boiler-1/properties"}`)
		refused(t, "a device's report", e, "Forbidden", "devices/boiler-1/properties")
		_, e = g.call(t, "alarm", `{"call":"publish","topic":"$SYS/x"}`)
		refused(t, "a $-topic", e, "Forbidden")
		_, e = g.call(t, "alarm", `{"call":"publish","topic":"outputs/alarm/+"}`)
		refused(t, "a wildcard topic", e, "BadRequest", "outputs/alarm/+")
		_, e = g.call(t, "alarm", `{"call":"publish","topic":"outputs/alarm/x","qos":3}`)
		refused(t, "QoS 3", e, "BadRequest", "QoS 3")

		// A function with no permissions has its own prefix only.
		g.deploy(t, "plain", function.Permissions{}, "")
		_, e = g.call(t, "plain", `{"call":"publish","topic":"alerts/boiler-1/high"}`)
		refused(t, "no permissions", e, "Forbidden")
		select {
		case m := <-got:
			t.Errorf("a refused publish reached the bus: %s", m.Topic)
		default:
		}
	})
}

// TestPublishNoWait: a function publishes a stream without waiting for
// each answer; every message arrives, in order, and flush returns once
// they are on the bus. What the gateway refuses of such publishes is not
// lost: the next flush returns it, counted, and forgets it. Go, Node.js
// and Python, on membus and through Mosquitto.
func TestPublishNoWait(t *testing.T) {
	eachRuntime(t, func(t *testing.T, g *gateway) {
		const n = 2000
		got := make(chan *bus.Message, n+10)
		if _, err := g.bus.Subscribe(context.Background(), "outputs/#", func(_ context.Context, m *bus.Message) { got <- m }, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
		g.deploy(t, "stream", function.Permissions{}, "")
		if _, e := g.call(t, "stream", `{"call":"publish","topic":"outputs/stream/x","qos":1,"noWait":true,"repeat":`+strconv.Itoa(n)+`}`); e != nil {
			t.Fatalf("a stream of %d: %+v", n, e)
		}
		for i := range n {
			select {
			case m := <-got:
				if m.Topic != "outputs/stream/x" || string(m.Payload) != strconv.Itoa(i) {
					t.Fatalf("message %d: %s %q", i, m.Topic, m.Payload)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%d of %d messages arrived", i, n)
			}
		}

		_, e := g.call(t, "stream", `{"call":"publish","topic":"outputs/other/x","noWait":true,"repeat":3}`)
		refused(t, "three publishes outside the function's prefix", e, "Forbidden", "3 of the calls", "outputs/other/x", "permissions.publish")
		if _, e := g.call(t, "stream", `{"call":"publish","topic":"outputs/stream/y","noWait":true}`); e != nil {
			t.Errorf("the refusals were reported by the flush before, yet: %+v", e)
		}
		select {
		case m := <-got:
			if m.Topic != "outputs/stream/y" {
				t.Errorf("got %s, want outputs/stream/y", m.Topic)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("outputs/stream/y did not arrive")
		}
		select {
		case m := <-got:
			t.Errorf("a refused publish reached the bus: %s", m.Topic)
		default:
		}
	})
}

// TestDevices: a function reads, writes, calls and lists the devices its
// permissions name; the thing model's checks answer as the devices'
// topics do; devices it may not touch and unknown ones are refused naming
// them.
func TestDevices(t *testing.T) {
	eachRuntime(t, func(t *testing.T, g *gateway) {
		g.deploy(t, "ctl", function.Permissions{Devices: []string{"boiler-*", "ghost"}}, "")

		if _, e := g.call(t, "ctl", `{"call":"set","device":"boiler-1","values":{"setpoint":70}}`); e != nil {
			t.Fatalf("set: %+v", e)
		}
		a, e := g.call(t, "ctl", `{"call":"get","device":"boiler-1","ids":["setpoint"]}`)
		var read struct{ Properties map[string]float64 }
		if err := json.Unmarshal(a, &read); e != nil || err != nil || read.Properties["setpoint"] != 70 {
			t.Errorf("get after set: %s %+v", a, e)
		}
		a, e = g.call(t, "ctl", `{"call":"set","device":"boiler-1","values":{"setpoint":95}}`)
		refused(t, "out of range", e, "InvalidValue", "95 above max 90")
		a, e = g.call(t, "ctl", `{"call":"set","device":"boiler-1","values":{"temperature":20}}`)
		refused(t, "read-only", e, "ReadOnly", "temperature")
		a, e = g.call(t, "ctl", `{"call":"service","device":"boiler-1","service":"reboot","values":{"delay":5}}`)
		if e != nil {
			t.Errorf("service: %s %+v", a, e)
		}
		_, e = g.call(t, "ctl", `{"call":"service","device":"boiler-1","service":"explode"}`)
		refused(t, "unknown service", e, "UnknownService", "explode")
		_, e = g.call(t, "ctl", `{"call":"get","device":"meter-1"}`)
		refused(t, "a device outside its permissions", e, "Forbidden", "meter-1", "permissions.devices")
		_, e = g.call(t, "ctl", `{"call":"set","device":"meter-1","values":{"setpoint":60}}`)
		refused(t, "a write outside its permissions", e, "Forbidden", "meter-1")
		_, e = g.call(t, "ctl", `{"call":"get","device":"ghost"}`)
		refused(t, "an unknown device", e, "UnknownDevice", "ghost")

		a, e = g.call(t, "ctl", `{"call":"list"}`)
		var list []struct {
			Name, State string
			Labels      map[string]string
		}
		if err := json.Unmarshal(a, &list); e != nil || err != nil || len(list) != 2 || list[0].Name != "boiler-1" || list[1].Name != "boiler-2" ||
			list[0].State == "" || list[0].Labels["room"] != "cellar" {
			t.Errorf("list: %s %+v", a, e)
		}
		// By label: meter-1 is in the cellar too, but outside the
		// function's permissions.
		a, e = g.call(t, "ctl", `{"call":"list","labels":{"room":"cellar"}}`)
		if err := json.Unmarshal(a, &list); e != nil || err != nil || len(list) != 1 || list[0].Name != "boiler-1" {
			t.Errorf("list by label: %s %+v", a, e)
		}
	})
}

// TestInvokeAndConfig: a function invokes the functions its permissions
// list, gets their results and their errors with type and stack, and
// reads its own configuration.
func TestInvokeAndConfig(t *testing.T) {
	eachRuntime(t, testInvokeAndConfig)
}

func testInvokeAndConfig(t *testing.T, g *gateway) {
	g.deploy(t, "caller", function.Permissions{Invoke: []string{"callee"}}, `{"threshold":30}`)
	g.deploy(t, "callee", function.Permissions{}, "")

	a, e := g.call(t, "caller", `{"call":"invoke","function":"callee","payload":"{\"call\":\"config\"}"}`)
	if e != nil || !sameJSON(a, `{"answer":null}`) {
		t.Errorf("invoke: %s %+v", a, e)
	}
	if _, e := g.call(t, "caller", `{"call":"invoke-async","function":"callee","payload":"{\"call\":\"config\"}"}`); e != nil {
		t.Errorf("invoke async: %+v", e)
	}
	a, e = g.call(t, "caller", `{"call":"invoke","function":"callee","payload":"{\"call\":\"bogus\"}"}`)
	if e == nil || e.Type == "" || e.Is == "Forbidden" || !strings.Contains(e.Message, "unknown call bogus") {
		t.Errorf("a failing invocation: %s %+v", a, e)
	}
	_, e = g.call(t, "callee", `{"call":"invoke","function":"caller"}`)
	refused(t, "invoke without permission", e, "Forbidden", "caller", "permissions.invoke")
	g.deploy(t, "wild", function.Permissions{Invoke: []string{"*"}}, "")
	_, e = g.call(t, "wild", `{"call":"invoke","function":"nobody"}`)
	refused(t, "an unknown function", e, "UnknownFunction", "nobody")

	if a, e := g.call(t, "caller", `{"call":"config"}`); e != nil || !sameJSON(a, `{"threshold":30}`) {
		t.Errorf("config: %s %+v", a, e)
	}
}

// TestLateCall: a call made after its invocation's deadline is refused
// as Timeout and reaches nothing. Go: through a context past its deadline.
// Node.js: from a timer the invocation started, which fires after it.
// Python: from a thread the invocation started, with its context. Each
// logs what its call got.
func TestLateCall(t *testing.T) {
	eachRuntime(t, func(t *testing.T, g *gateway) {
		got := make(chan *bus.Message, 10)
		if _, err := g.bus.Subscribe(context.Background(), "outputs/#", func(_ context.Context, m *bus.Message) { got <- m }, nil); err != nil {
			t.Fatal(err)
		}
		g.deploySpec(t, "late", function.Permissions{}, "", time.Second)
		event := `{"call":"late","topic":"outputs/late/x"}`
		switch g.rt.name {
		case "go":
			_, e := g.call(t, "late", event)
			refused(t, "a call after its deadline", e, "Timeout")
		default:
			if a, e := g.call(t, "late", event); e != nil || !sameJSON(a, `"scheduled"`) {
				t.Fatalf("late: %s %+v", a, e)
			}
		}
		if g.rt.name != "go" {
			testenv.Eventually(t, "the late call's outcome in the function's log", func() bool {
				recs, _ := g.host.Logs(logstore.Query{Function: "late", Contains: "late call:"})
				if len(recs) > 0 && !strings.Contains(recs[0].Message, "late call: Timeout") {
					t.Fatalf("late call: %s", recs[0].Message)
				}
				return len(recs) > 0
			})
		}
		select {
		case m := <-got:
			t.Errorf("the late call published on %s", m.Topic)
		default:
		}
	})
}

// sameJSON reports whether a holds the JSON value want (each runtime
// spaces its JSON its own way).
func sameJSON(a json.RawMessage, want string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(want), &y) == nil && reflect.DeepEqual(x, y)
}

// FuzzServe: whatever a function sends as a call's method, arguments and
// payload, the server answers or refuses without panicking, and a publish
// it takes is never on the gateway's own topics or a device's reports,
// even for a function whose permissions allow everything.
func FuzzServe(f *testing.F) {
	b := membus.New(nil)
	f.Cleanup(func() { _ = b.Close(context.Background()) })
	g := newGateway(f, b)
	for _, seed := range [][3]string{
		{fnapi.Publish, `{"topic":"outputs/f/x","qos":1,"userProperties":[["a","b"]]}`, "21.5"},
		{fnapi.Publish, `{"topic":"edgekit/instances/gw/status"}`, ""},
		{fnapi.Publish, `{"topic":"devices/boiler-1/properties"}`, ""},
		{fnapi.Invoke, `{"function":"nobody","async":true}`, "{}"},
		{fnapi.DeviceGet, `{"device":"boiler-1","properties":["setpoint"]}`, ""},
		{fnapi.DeviceSet, `{"device":"boiler-1","properties":{"setpoint":95}}`, ""},
		{fnapi.DeviceCall, `{"device":"boiler-1","service":"reboot","input":{"delay":5}}`, ""},
		{fnapi.DeviceList, `{}`, ""},
		{fnapi.ConfigGet, ``, ""},
	} {
		f.Add(seed[0], []byte(seed[1]), []byte(seed[2]))
	}
	spec := function.Spec{Name: "f", Version: "1", Permissions: function.Permissions{Publish: []string{"#"}, Devices: []string{"*"}, Invoke: []string{"*"}}}
	f.Fuzz(func(t *testing.T, method string, args, payload []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := g.srv.Serve(ctx, &function.Call{Function: spec, Method: method, Args: args, Payload: payload})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if method != fnapi.Publish {
			return
		}
		var a fnapi.PublishArgs
		_ = json.Unmarshal(args, &a)
		for _, own := range []string{"edgekit/#", "devices/+/properties", "devices/+/state", "devices/+/events/#"} {
			if bus.Match(own, a.Topic) || strings.HasPrefix(a.Topic, "$") {
				t.Fatalf("published on %q", a.Topic)
			}
		}
	})
}

// TestLog: a function's record at a level reaches its log on the gateway
// at that level; a level that is none is refused.
func TestLog(t *testing.T) {
	eachRuntime(t, func(t *testing.T, g *gateway) {
		g.deploy(t, "logger", function.Permissions{}, "")
		if _, e := g.call(t, "logger", `{"call":"log","payload":"disk at 91%"}`); e != nil {
			t.Fatalf("log: %+v", e)
		}
		testenv.Eventually(t, "the record in the function's log at warn", func() bool {
			recs, _ := g.host.Logs(logstore.Query{Function: "logger", MinLevel: slog.LevelWarn, Contains: "disk at 91%"})
			return len(recs) > 0
		})
		if g.rt.name != "go" { // Go's level is a slog.Level
			_, e := g.call(t, "logger", `{"call":"log","level":"loud","payload":"x"}`)
			refused(t, "a level that is none", e, "BadRequest", "loud")
		}
	})
}

// TestConfigChange: a deployment that changes only a native function's
// configuration reaches the running instance — its listener is called
// with the new document, and config.get answers it — without a restart.
func TestConfigChange(t *testing.T) {
	eachRuntime(t, func(t *testing.T, g *gateway) {
		got := make(chan *bus.Message, 10)
		if _, err := g.bus.Subscribe(context.Background(), "outputs/cfg/config", func(_ context.Context, m *bus.Message) { got <- m }, nil); err != nil {
			t.Fatal(err)
		}
		g.deploy(t, "cfg", function.Permissions{}, `{"threshold":30}`)
		if a, e := g.call(t, "cfg", `{"call":"config"}`); e != nil || !sameJSON(a, `{"threshold":30}`) {
			t.Fatalf("config: %s %+v", a, e)
		}
		pids := func() []int {
			st, err := g.host.Status("cfg")
			if err != nil {
				t.Fatal(err)
			}
			var ps []int
			for _, i := range st.Instances {
				ps = append(ps, i.PID)
			}
			return ps
		}
		before := pids()
		g.deploy(t, "cfg", function.Permissions{}, `{"threshold":40}`)
		select {
		case m := <-got:
			if !sameJSON(m.Payload, `{"threshold":40}`) {
				t.Errorf("the listener got %s", m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the listener was not called")
		}
		if a, e := g.call(t, "cfg", `{"call":"config"}`); e != nil || !sameJSON(a, `{"threshold":40}`) {
			t.Errorf("config after the change: %s %+v", a, e)
		}
		if after := pids(); !slices.Equal(before, after) || len(after) == 0 {
			t.Errorf("instances %v before the change, %v after: restarted", before, after)
		}
		if st, _ := g.host.Status("cfg"); !sameJSON(st.Spec.Config, `{"threshold":40}`) {
			t.Errorf("Status says the configuration is %s", st.Spec.Config)
		}
	})
}

// TestLinkEdgeCore: functions written to Link IoT Edge's core SDK
// documentation (linkedge-core-sdk, lecoresdk) run on the gateway API: a
// long-lived one publishes every second, one sets, gets and calls a thing
// and finds things by tag, one invokes another; a thing outside the
// function's permissions is refused.
func TestLinkEdgeCore(t *testing.T) {
	// The Link IoT Edge SDKs are for Node.js and Python.
	scripts := slices.DeleteFunc(runtimes(t), func(rt runtime) bool { return rt.name == "go" })
	eachRuntimeIn(t, scripts, func(t *testing.T, g *gateway) {
		got := make(chan *bus.Message, 10)
		if _, err := g.bus.Subscribe(context.Background(), "/hello/world", func(_ context.Context, m *bus.Message) {
			select {
			case got <- m:
			default:
			}
		}, nil); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(filepath.Dir(g.rt.codeDir), "linkedge", filepath.Base(g.rt.codeDir))
		deploy := func(name, module string, mode function.Mode, perms function.Permissions) {
			t.Helper()
			s := function.Spec{Name: name, Version: "1", Runtime: g.rt.runtime, Service: function.ServiceFC, Handler: module + ".handler",
				CodeDir: dir, Mode: mode, Permissions: perms}
			if err := g.host.Deploy(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		invoke := func(name, event string) map[string]any {
			t.Helper()
			resp, err := g.host.Invoke(context.Background(), name, invoke.Request{Payload: []byte(event)})
			var v map[string]any
			if err != nil || json.Unmarshal(resp.Payload, &v) != nil {
				t.Fatalf("%s: %q %v", name, resp.Payload, err)
			}
			return v
		}

		deploy("link-hello", "hello", function.Continuous, function.Permissions{Publish: []string{"/hello/#"}})
		select {
		case m := <-got:
			if !strings.HasPrefix(string(m.Payload), "Hello from") {
				t.Errorf("hello: %q", m.Payload)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the long-lived function published nothing")
		}

		deploy("link-things", "things", function.OnDemand, function.Permissions{Devices: []string{"boiler-*"}})
		v := invoke("link-things", `{"productKey": "pk1", "deviceName": "boiler-1"}`)
		b, _ := json.Marshal(v)
		for _, want := range []string{`"get":{"code":0,"message":"success","output":{"setpoint":65}}`, `"set":{"code":0`, `"service":{"code":0`,
			`"things":[{"deviceName":"boiler-1","productKey":"pk1"}]`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("things: %s lacks %s", b, want)
			}
		}
		v = invoke("link-things", `{"productKey": "pk1", "deviceName": "meter-1"}`)
		if b, _ := json.Marshal(v); !strings.Contains(string(b), "Forbidden") || !strings.Contains(string(b), "meter-1") {
			t.Errorf("a thing outside the permissions: %s", b)
		}

		deploy("link-invokee", "invokee", function.OnDemand, function.Permissions{})
		deploy("link-invoker", "invoker", function.OnDemand, function.Permissions{Invoke: []string{"link-invokee"}})
		v = invoke("link-invoker", `{}`)
		if v["statusCode"] != float64(200) || v["payload"] != "Returned from the invokee: String message from the invoker." || v["functionError"] != "" {
			t.Errorf("invoke: %v", v)
		}
	})
}
