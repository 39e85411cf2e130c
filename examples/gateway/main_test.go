package main

import (
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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"
	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestMain builds the Go example function next to its manifest, as
// `make gateway` does, then checks for leaked goroutines.
func TestMain(m *testing.M) {
	out, err := exec.Command("go", "build", "-o", "../function-go/bootstrap", "../function-go").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building examples/function-go: %v\n%s", err, out)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// TestGateway runs the example as the README does and talks to it with the
// Mosquitto command-line clients, as the README tells a newcomer to.
func TestGateway(t *testing.T) {
	for _, tool := range []string{"mosquitto", "mosquitto_sub", "mosquitto_rr"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := exec.LookPath("/usr/sbin/" + tool); err2 != nil {
				brokertest.Missing(t, err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testenv.Buffer{}
	dataDir := filepath.Join(brokertest.DataDir(t), "data")
	boiler := startBoiler(t)
	// The example's triggers, with a timer fast enough for a test.
	triggers := slices.Clone(defaultTriggers)
	triggers[0].Params = json.RawMessage(`{"every": "200ms", "event": {"device": "self-test", "temperature": 20}}`)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{dataDir: dataDir, listen: "127.0.0.1:0", api: "127.0.0.1:0", name: "test-gw", status: 200 * time.Millisecond,
			functions: []string{"../function-node", "../function-python", "../function-go"}, triggers: triggers,
			modbus: boiler.url, poll: 50 * time.Millisecond}, discardLogger(), out)
	}()
	var startErr error
	testenv.Eventually(t, "the gateway running", func() bool {
		select {
		case startErr = <-done:
			return true
		default:
			return strings.Contains(out.String(), "running")
		}
	})
	if startErr != nil {
		t.Fatalf("gateway stopped: %v", startErr)
	}
	port := regexp.MustCompile(`local MQTT broker on mqtt://127\.0\.0\.1:(\d+)`).FindStringSubmatch(out.String())
	if port == nil {
		t.Fatalf("no broker address in the output: %s", out.String())
	}
	if st, err := os.Stat(dataDir); err != nil || st.Mode().Perm()&0o077&^0o011 != 0 {
		t.Errorf("data directory %v (%v): want 0700, or 0711 as root", st.Mode().Perm(), err)
	}
	password, err := os.ReadFile(filepath.Join(dataDir, "mqtt-password"))
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
	status := cli("mosquitto_sub", "-t", "gateway/status", "-C", "1", "-W", "8")
	var st map[string]any
	if err := json.Unmarshal([]byte(status), &st); err != nil || st["gateway"] != "test-gw" {
		t.Errorf("retained status %q (%v)", status, err)
	}
	if got := cli("mosquitto_rr", append(app, "-t", "commands/echo", "-e", "replies/test", "-m", "ping", "-W", "8")...); got != "ping" {
		t.Errorf("echo answered %q, want ping", got)
	}
	// Anonymous clients may not call functions, ask devices, or make the
	// gateway publish: the broker refuses each publish.
	for _, topic := range []string{"functions/temperature-alarm-go/invoke", "devices/boiler/set", "gateway/status", "replies/x"} {
		if got := cli("mosquitto_pub", "-q", "1", "-t", topic, "-m", `{}`); !strings.Contains(got, "Not authorized") {
			t.Errorf("anonymous publish on %s: %q, want it refused", topic, got)
		}
	}
	// The example functions answer MQTT v5 requests through the bridge,
	// and HTTP calls with the token the gateway keeps in its data
	// directory, as the README shows.
	token, err := os.ReadFile(filepath.Join(dataDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	apiURL := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(out.String())
	for _, name := range []string{"temperature-alarm-node", "temperature-alarm-python", "temperature-alarm-go"} {
		got := cli("mosquitto_rr", append(app, "-t", "functions/"+name+"/invoke", "-e", "replies/"+name, "-D", "PUBLISH", "correlation-data", "42",
			"-m", `{"device":"boiler","temperature":91}`, "-W", "15")...)
		var v map[string]any
		if err := json.Unmarshal([]byte(got), &v); err != nil || v["alarm"] != true || v["device"] != "boiler" {
			t.Errorf("%s answered %q over MQTT (%v)", name, got, err)
		}
		req, _ := http.NewRequest("POST", apiURL+"/v1/functions/"+name+"/invoke", strings.NewReader(`{"device":"boiler","temperature":91}`))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		v = nil
		if err := json.Unmarshal(body, &v); err != nil || resp.StatusCode != 200 || v["alarm"] != true {
			t.Errorf("%s answered %d %q over HTTP (%v)", name, resp.StatusCode, body, err)
		}
	}
	// A request without correlation data is answered with an error naming it.
	if got := cli("mosquitto_rr", append(app, "-t", "functions/temperature-alarm-go/invoke", "-e", "replies/bad", "-m", `{}`, "-W", "15")...); !strings.Contains(got, "correlation data") {
		t.Errorf("request without correlation data answered %q", got)
	}

	// The telemetry rule: a reading in, an alarm out. The subscriber is an
	// mqttbus client: it is subscribed once Subscribe returns.
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
	if _, err := b.Subscribe(ctx, "gateway/alarms", alarms.Handle, nil); err != nil {
		t.Fatal(err)
	}
	cli("mosquitto_pub", "-t", "devices/boiler/telemetry", "-q", "1", "-m", `{"device":"boiler","temperature":95}`)
	if got := string(alarms.WaitCount(t, 1)[0].Payload); !strings.Contains(got, `"alarm":true`) || !strings.Contains(got, "boiler") {
		t.Errorf("alarm %q", got)
	}

	// The timer trigger has run the Python function: the status counts it.
	testenv.Eventually(t, "the timer trigger running the Python function", func() bool {
		var st struct{ Invocations map[string]int }
		_ = json.Unmarshal([]byte(cli("mosquitto_sub", "-t", "gateway/status", "-C", "1", "-W", "8")), &st)
		return st.Invocations["temperature-alarm-python"] >= 3 // 2 calls above, then the timer
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

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not shut down")
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port[1], time.Second); err == nil {
		c.Close()
		t.Error("broker still listening after shutdown")
	}
}

// TestDataDirRefused: a data directory someone else made, or one others
// may write, is refused; so is a token file that is not ours and 0600.
func TestDataDirRefused(t *testing.T) {
	parent := t.TempDir()
	open := filepath.Join(parent, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if err := prepareDataDir(open); err == nil || !strings.Contains(err.Error(), "others may change") {
		t.Errorf("a world-writable data directory: %v", err)
	}
	if os.Geteuid() == 0 {
		squat := filepath.Join(parent, "squat")
		os.Mkdir(squat, 0o700)
		os.Chown(squat, 65534, 65534)
		if err := prepareDataDir(squat); err == nil || !strings.Contains(err.Error(), "someone else made it") {
			t.Errorf("a squatted data directory: %v", err)
		}
	}
	ours := filepath.Join(parent, "ours")
	if err := prepareDataDir(ours); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(ours, "api-token")
	os.WriteFile(planted, []byte("0123456789abcdef0123\n"), 0o644)
	if _, err := secret(planted); err == nil || !strings.Contains(err.Error(), "not adopting") {
		t.Errorf("a token file others may read: %v", err)
	}
	fresh := filepath.Join(ours, "mqtt-password")
	a, err := secret(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := secret(fresh); err != nil || b != a {
		t.Errorf("the secret kept: %q then %q (%v)", a, b, err)
	}
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
