package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"
	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/podmantest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestMain builds the Go example function next to its manifest, as
// `make gateway` does, then checks for leaked goroutines.
func TestMain(m *testing.M) {
	// The Go function is the main module's: built from there.
	fn := exec.Command("go", "build", "-o", "examples/function-go/bootstrap", "./examples/function-go")
	fn.Dir = "../.."
	out, err := fn.CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building examples/function-go: %v\n%s", err, out)
		os.Exit(1)
	}
	web := exec.Command("go", "build", "-o", "webapp/web", "./webapp")
	web.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := web.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the container app: %v\n%s", err, out)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// TestGateway runs the example as the README does and talks to it with the
// Mosquitto command-line clients and curl's requests, as the README tells a
// newcomer to; then it changes the deployment file and watches the swap.
func TestGateway(t *testing.T) {
	for _, tool := range []string{"mosquitto", "mosquitto_sub", "mosquitto_rr"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := exec.LookPath("/usr/sbin/" + tool); err2 != nil {
				brokertest.Missing(t, err)
			}
		}
	}
	testenv.Tool(t, "node")
	testenv.Tool(t, "python3")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testenv.Buffer{}
	dataDir := filepath.Join(brokertest.DataDir(t), "data")
	boiler := startBoiler(t)
	// The example's deployment file, with a timer fast enough for a test.
	examples, _ := filepath.Abs("..")
	template, err := os.ReadFile("deployment.json")
	if err != nil {
		t.Fatal(err)
	}
	deployment := filepath.Join(t.TempDir(), "deployment.json")
	// The container app on a private podman, on a port of its own.
	svc := podmantest.Start(t)
	webPort := freePort(t)
	writeTemplate := func(b []byte) {
		b = bytes.ReplaceAll(b, []byte(`"dir:../`), []byte(`"dir:`+examples+"/"))
		b = bytes.ReplaceAll(b, []byte("127.0.0.1:8781"), []byte(webPort))
		b = bytes.ReplaceAll(b, []byte(`"every": "30s"`), []byte(`"every": "200ms"`))
		b = bytes.ReplaceAll(b, []byte(`"probation": "5s"`), []byte(`"probation": "200ms"`))
		b = bytes.ReplaceAll(b, []byte(`"interval": 2000`), []byte(`"interval": 100`))
		if err := os.WriteFile(deployment, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeTemplate(template)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{DataDir: dataDir, Listen: "127.0.0.1:0", API: "127.0.0.1:0", Name: "test-gw",
			Modbus: boiler.url, Poll: duration(50 * time.Millisecond), Deployment: deployment, Podman: svc.URL, WebApp: "webapp/web"}, discardLogger(), out)
	}()
	var startErr error
	testenv.EventuallyWithin(t, "the gateway running", 2*time.Minute, func() bool {
		select {
		case startErr = <-done:
			return true
		default:
			return strings.Contains(out.String(), "swap:")
		}
	})
	if startErr != nil {
		t.Fatalf("gateway stopped: %v\n%s", startErr, out.String())
	}
	port := regexp.MustCompile(`local MQTT broker on mqtt://127\.0\.0\.1:(\d+)`).FindStringSubmatch(out.String())
	apiURL := regexp.MustCompile(`local API on (http://127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if port == nil || apiURL == nil {
		t.Fatalf("no broker or API address in the output: %s", out.String())
	}
	if st, err := os.Stat(dataDir); err != nil || st.Mode().Perm()&0o077&^0o011 != 0 {
		t.Errorf("data directory %v (%v): want 0700, or 0711 as root", st.Mode().Perm(), err)
	}
	password, err := os.ReadFile(filepath.Join(dataDir, "mqtt-password"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(dataDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	app := []string{"-u", "app", "-P", strings.TrimSpace(string(password))}
	cli := func(tool string, args ...string) string {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		b, err := exec.CommandContext(cctx, tool, append([]string{"-V", "5", "-h", "127.0.0.1", "-p", port[1]}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", tool, args, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	curl := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, apiURL[1]+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	awaitRevision := func(rev uint64) {
		t.Helper()
		var st struct {
			Revision uint64
			Outcome  string
			Reason   string
		}
		testenv.EventuallyWithin(t, fmt.Sprintf("revision %d applied", rev), 2*time.Minute, func() bool {
			_, b := curl("GET", "/v1/deployment", "")
			_ = json.Unmarshal(b, &st)
			return st.Revision == rev && st.Outcome != "in-progress"
		})
		if st.Outcome != "succeeded" {
			t.Fatalf("revision %d: %s: %s", rev, st.Outcome, st.Reason)
		}
	}
	awaitRevision(1)
	// The container app runs and answers.
	if resp, err := http.Get("http://" + webPort + "/"); err != nil {
		t.Errorf("the container app: %v", err)
	} else {
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), "version 1") || !strings.Contains(string(page), "Boiler room") {
			t.Errorf("the container app's page: %s", page)
		}
	}
	// The status is retained for LAN clients.
	if status := cli("mosquitto_sub", "-t", "edgekit/instances/test-gw/status", "-C", "1", "-W", "8"); !strings.Contains(status, `"outcome":"succeeded"`) {
		t.Errorf("retained status %q", status)
	}
	// Anonymous clients may not call functions, ask devices, or make the
	// gateway publish: the broker refuses each publish.
	for _, topic := range []string{"functions/temperature-alarm-go/invoke", "devices/boiler/set", "edgekit/instances/test-gw/status", "replies/x", "outputs/alarms"} {
		if got := cli("mosquitto_pub", "-q", "1", "-t", topic, "-m", `{}`); !strings.Contains(got, "Not authorized") {
			t.Errorf("anonymous publish on %s: %q, want it refused", topic, got)
		}
	}
	// The functions answer MQTT v5 requests and HTTP calls.
	for _, name := range []string{"temperature-alarm-node", "temperature-alarm-python", "temperature-alarm-go"} {
		got := cli("mosquitto_rr", append(app, "-t", "functions/"+name+"/invoke", "-e", "replies/"+name, "-D", "PUBLISH", "correlation-data", "42",
			"-m", `{"device":"boiler","temperature":91}`, "-W", "15")...)
		var v map[string]any
		if err := json.Unmarshal([]byte(got), &v); err != nil || v["alarm"] != true || v["device"] != "boiler" {
			t.Errorf("%s answered %q over MQTT (%v)", name, got, err)
		}
		code, body := curl("POST", "/v1/functions/"+name+"/invoke", `{"device":"boiler","temperature":91}`)
		v = nil
		if err := json.Unmarshal(body, &v); err != nil || code != 200 || v["alarm"] != true {
			t.Errorf("%s answered %d %q over HTTP (%v)", name, code, body, err)
		}
	}
	if got := cli("mosquitto_rr", append(app, "-t", "functions/temperature-alarm-go/invoke", "-e", "replies/bad", "-m", `{}`, "-W", "15")...); !strings.Contains(got, "correlation data") {
		t.Errorf("request without correlation data answered %q", got)
	}

	// The rules: a LAN reading in, the Go function's alarm out; and the
	// Node.js function's verdict on each boiler report (it carries the
	// temperature).
	b, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://127.0.0.1:" + port[1]}, ClientID: "test-alarms",
		CleanStart: true, SessionExpiry: -1, QueueDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	if err := b.AwaitConnection(actx); err != nil {
		t.Fatal(err)
	}
	alarms := bustest.NewCollector()
	if _, err := b.Subscribe(ctx, "outputs/alarms", alarms.Handle, nil); err != nil {
		t.Fatal(err)
	}
	cli("mosquitto_pub", "-t", "devices/lan-sensor/telemetry", "-q", "1", "-m", `{"device":"lan-sensor","temperature":95}`)
	testenv.Eventually(t, "the alarms of both rules", func() bool {
		var goAlarm, nodeVerdict bool
		for _, m := range alarms.Messages() {
			s := string(m.Payload)
			goAlarm = goAlarm || strings.Contains(s, `"device":"lan-sensor"`) && strings.Contains(s, `"alarm":true`)
			nodeVerdict = nodeVerdict || strings.Contains(s, `"device":"boiler"`) && strings.Contains(s, `"temperature":2`)
		}
		return goAlarm && nodeVerdict
	})

	// The Python function reads the boiler itself, through the gateway
	// API, when the event names only the device.
	if code, body := curl("POST", "/v1/functions/temperature-alarm-python/invoke", `{"device":"boiler"}`); code != 200 || !strings.Contains(string(body), `"temperature": 2`) {
		t.Errorf("the Python function reading the boiler: %d %s", code, body)
	}

	// The timer trigger runs the Python function.
	testenv.Eventually(t, "the timer trigger running the Python function", func() bool {
		var st struct{ Stats struct{ Invocations int } }
		_, body := curl("GET", "/v1/functions/temperature-alarm-python", "")
		_ = json.Unmarshal(body, &st)
		return st.Stats.Invocations >= 5 // 3 calls above, then the timer
	})

	// The Modbus boiler: its registers appear as checked reports, and a
	// set request over MQTT writes its set point.
	report := cli("mosquitto_sub", "-t", "devices/boiler/properties", "-C", "1", "-W", "8")
	if !strings.Contains(report, `"temperature":2`) || !strings.Contains(report, `"device":"boiler"`) {
		t.Errorf("boiler report %q", report)
	}
	if got := cli("mosquitto_rr", append(app, "-t", "devices/boiler/set", "-e", "replies/boiler", "-D", "PUBLISH", "correlation-data", "7",
		"-m", `{"properties":{"setpoint":70}}`, "-W", "8")...); got != `{"results":{"setpoint":null}}` || boiler.setpoint() != 70 {
		t.Errorf("set answered %q, register %d", got, boiler.setpoint())
	}
	if got := cli("mosquitto_rr", append(app, "-t", "devices/boiler/set", "-e", "replies/boiler", "-D", "PUBLISH", "correlation-data", "8",
		"-m", `{"properties":{"setpoint":99}}`, "-W", "8")...); !strings.Contains(got, "properties.setpoint: 99 above max 90") {
		t.Errorf("out-of-range set answered %q", got)
	}

	// The Node.js driver app serves the hall thermometer the deployment
	// binds to it: checked reports on its topic, and a set and a service
	// call over MQTT answered by the driver's callbacks.
	report = cli("mosquitto_sub", "-t", "devices/hall-thermometer/properties", "-C", "1", "-W", "15")
	if !strings.Contains(report, `"temperature":2`) || !strings.Contains(report, `"device":"hall-thermometer"`) {
		t.Errorf("hall thermometer report %q", report)
	}
	if got := cli("mosquitto_rr", append(app, "-t", "devices/hall-thermometer/set", "-e", "replies/hall", "-D", "PUBLISH", "correlation-data", "9",
		"-m", `{"properties":{"alarmAt":25.5}}`, "-W", "8")...); got != `{"results":{"alarmAt":null}}` {
		t.Errorf("set of the hall thermometer answered %q", got)
	}
	if got := cli("mosquitto_rr", append(app, "-t", "devices/hall-thermometer/services/calibrate", "-e", "replies/hall", "-D", "PUBLISH", "correlation-data", "10",
		"-m", `{"offset":1.5}`, "-W", "8")...); !strings.Contains(got, `"offset":1.5`) {
		t.Errorf("calibrate answered %q", got)
	}

	// A newcomer changes the Node.js function's version and threshold in
	// the deployment file: the gateway swaps it without a restart.
	changed := bytes.Replace(template, []byte(`"version": "1.0.0"`), []byte(`"version": "1.1.0"`), 1)
	changed = bytes.Replace(changed, []byte(`{"threshold": 80}`), []byte(`{"threshold": 95}`), 1)
	writeTemplate(changed)
	awaitRevision(2)
	code, body := curl("POST", "/v1/functions/temperature-alarm-node/invoke", `{"device":"boiler","temperature":91}`)
	if code != 200 || !strings.Contains(string(body), `"alarm":false`) || !strings.Contains(string(body), `"threshold":95`) {
		t.Errorf("the swapped Node.js function answered %d %s", code, body)
	}
	if _, body := curl("GET", "/v1/functions/temperature-alarm-node", ""); !strings.Contains(string(body), `"Version":"1.1.0"`) {
		t.Errorf("the Node.js function after the swap: %s", body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not shut down")
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port[1], time.Second); err == nil {
		c.Close()
		t.Error("broker still listening after shutdown")
	}
}

// freePort is a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// modbusBoiler is a Modbus TCP server with the registers of
// examples/modbus-sim's boiler, fixed.
type modbusBoiler struct {
	url   string
	mu    sync.Mutex
	regs  map[uint16]uint16
	reads uint16
}

func (b *modbusBoiler) setpoint() uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.regs[10]
}

func (b *modbusBoiler) HandleCoils(req *mb.CoilsRequest) ([]bool, error) {
	return make([]bool, req.Quantity), nil
}

func (b *modbusBoiler) HandleDiscreteInputs(*mb.DiscreteInputsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalDataAddress
}

func (b *modbusBoiler) HandleHoldingRegisters(req *mb.HoldingRegistersRequest) ([]uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if req.IsWrite {
		b.regs[req.Addr] = req.Args[0]
	}
	return []uint16{b.regs[req.Addr]}, nil
}

// HandleInputRegisters gives a water temperature that moves between 21.5
// and 22.4 °C, so that polls report it.
func (b *modbusBoiler) HandleInputRegisters(*mb.InputRegistersRequest) ([]uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reads++
	return []uint16{215 + b.reads%10}, nil
}

func startBoiler(t *testing.T) *modbusBoiler {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b := &modbusBoiler{url: "tcp://" + addr, regs: map[uint16]uint16{10: 60}}
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: b.url, Timeout: time.Minute, MaxClients: 8, Logger: log.New(io.Discard, "", 0)}, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return b
}

// TestSettings: the settings file replaces the defaults and the flags
// override the file.
func TestSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gateway.json")
	if err := os.WriteFile(file, []byte(`{"name": "from-file", "listen": "127.0.0.1:1", "poll": "5s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := settings([]string{"-config", file, "-listen", "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "from-file" || cfg.Listen != "127.0.0.1:2" || time.Duration(cfg.Poll) != 5*time.Second || cfg.API != defaults().API {
		t.Errorf("settings: %+v", cfg)
	}
	if _, err := settings([]string{"-config", filepath.Join(t.TempDir(), "none.json")}); err == nil {
		t.Error("a missing settings file was taken")
	}
}
