package modbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"
	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicetest"
	"github.com/edgekit/edgekit/device/modbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// registers is a Modbus server's memory (the library's server mode asks a
// handler for every request).
type registers struct {
	mu       sync.Mutex
	holding  map[uint16]uint16
	input    map[uint16]uint16
	coils    map[uint16]bool
	discrete map[uint16]bool
	delay    time.Duration
	quit     chan struct{} // ends a delay when the server stops
	once     sync.Once
}

func newRegisters() *registers {
	return &registers{holding: map[uint16]uint16{}, input: map[uint16]uint16{}, coils: map[uint16]bool{}, discrete: map[uint16]bool{},
		quit: make(chan struct{})}
}

func (r *registers) wait() {
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-r.quit:
		}
	}
}

func (r *registers) HandleCoils(req *mb.CoilsRequest) ([]bool, error) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]bool, req.Quantity)
	for i := range out {
		a := req.Addr + uint16(i)
		if req.IsWrite {
			r.coils[a] = req.Args[i]
		}
		out[i] = r.coils[a]
	}
	return out, nil
}

func (r *registers) HandleDiscreteInputs(req *mb.DiscreteInputsRequest) ([]bool, error) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]bool, req.Quantity)
	for i := range out {
		out[i] = r.discrete[req.Addr+uint16(i)]
	}
	return out, nil
}

func (r *registers) HandleHoldingRegisters(req *mb.HoldingRegistersRequest) ([]uint16, error) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint16, req.Quantity)
	for i := range out {
		a := req.Addr + uint16(i)
		if req.IsWrite {
			r.holding[a] = req.Args[i]
		}
		out[i] = r.holding[a]
	}
	return out, nil
}

func (r *registers) HandleInputRegisters(req *mb.InputRegistersRequest) ([]uint16, error) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint16, req.Quantity)
	for i := range out {
		out[i] = r.input[req.Addr+uint16(i)]
	}
	return out, nil
}

func (r *registers) set(table map[uint16]uint16, addr, v uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	table[addr] = v
}

func (r *registers) get(table map[uint16]uint16, addr uint16) uint16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return table[addr]
}

// server is a real Modbus TCP server on a loopback port.
type server struct {
	url  string
	regs *registers
	srv  *mb.ModbusServer
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startServer(t testing.TB, addr string, regs *registers) *server {
	t.Helper()
	s := &server{url: "tcp://" + addr, regs: regs}
	s.start(t)
	t.Cleanup(s.halt)
	return s
}

func (s *server) start(t testing.TB) {
	t.Helper()
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: s.url, Timeout: time.Minute, MaxClients: 32, Logger: log.New(io.Discard, "", 0)}, s.regs)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s.srv = srv
}

func (s *server) stop() {
	if s.srv != nil {
		_ = s.srv.Stop()
		s.srv = nil
	}
}

// halt ends the server for good, slow handlers too.
func (s *server) halt() {
	s.stop()
	s.regs.once.Do(func() { close(s.regs.quit) })
}

const modelTSL = `{"properties": [
  {"identifier": "temperature", "accessMode": "r", "dataType": {"type": "float", "specs": {"min": "-40", "max": "120"}}},
  {"identifier": "setpoint", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "30", "max": "90"}}},
  {"identifier": "power", "accessMode": "rw", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
  {"identifier": "alarm", "accessMode": "r", "dataType": {"type": "bool", "specs": {"0": "no", "1": "yes"}}},
  {"identifier": "energy", "accessMode": "r", "dataType": {"type": "double", "specs": {}}}
],
"services": [{"identifier": "setSchedule", "callType": "sync", "inputData": [
  {"identifier": "start", "dataType": {"type": "int", "specs": {"min": "0", "max": "23"}}},
  {"identifier": "end", "dataType": {"type": "int", "specs": {"min": "0", "max": "23"}}}
], "outputData": []}]}`

func model(t testing.TB) *device.Model {
	t.Helper()
	m, err := device.ParseTSL([]byte(modelTSL))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func deviceOn(t testing.TB, name, url string, unit int) device.Device {
	cfg := fmt.Sprintf(`{"endpoint": %q, "unit": %d, "timeout": "500ms", "properties": {
		"temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1},
		"setpoint": {"table": "holding", "address": 10},
		"power": {"table": "coil", "address": 0},
		"alarm": {"table": "holding", "address": 30, "bit": 3},
		"energy": {"table": "input", "address": 20, "type": "float32", "word_order": "little"}
	}, "services": {"setSchedule": {"address": 100, "inputs": ["start", "end"]}}}`, url, unit)
	return device.Device{Name: name, Model: model(t), Config: json.RawMessage(cfg)}
}

func TestConformance(t *testing.T) {
	fast := startServer(t, freeAddr(t), newRegisters())
	slowRegs := newRegisters()
	slowRegs.delay = 1500 * time.Millisecond
	slow := startServer(t, freeAddr(t), slowRegs)
	fast.regs.set(fast.regs.input, 0, uint16(int16(215)))
	fast.regs.set(fast.regs.holding, 10, 50) // in the model's range
	devicetest.Run(t, devicetest.Harness{
		New:    func(*testing.T) device.Driver { return modbus.New() },
		Device: func(t *testing.T, name string) device.Device { return deviceOn(t, name, fast.url, 1) },
		Writes: map[string]any{"setpoint": 55, "power": true},
		Slow:   func(t *testing.T, name string) device.Device { return deviceOn(t, name, slow.url, 1) },
	})
}

// TestRegisters: values decode from each type, order, scale and bit, and
// writes land in the right registers.
func TestRegisters(t *testing.T) {
	s := startServer(t, freeAddr(t), newRegisters())
	r := s.regs
	r.set(r.input, 0, uint16(0xFF38)) // int16 -200 → -20.0 °C at scale 0.1
	bits := math.Float32bits(1234.5)
	r.set(r.input, 20, uint16(bits)) // little word order: low word first
	r.set(r.input, 21, uint16(bits>>16))
	r.set(r.holding, 30, 1<<3)
	d := modbus.New()
	host := devicetest.NewHost()
	_ = d.Open(context.Background(), nil, host)
	defer d.Close(context.Background())
	if err := d.Attach(context.Background(), deviceOn(t, "m", s.url, 7)); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, host, "m")
	got, err := d.ReadProperties(context.Background(), "m", []string{"temperature", "energy", "alarm", "setpoint"})
	if err != nil {
		t.Fatal(err)
	}
	if got["temperature"].Value != -20.0 || got["energy"].Value != 1234.5 || got["alarm"].Value != true || got["setpoint"].Value != int64(0) {
		t.Errorf("read %+v", got)
	}
	res, err := d.WriteProperties(context.Background(), "m", map[string]any{"setpoint": int64(65), "power": true, "temperature": 20.0})
	if err != nil || res["setpoint"] != nil || res["power"] != nil || !errors.Is(res["temperature"], device.ErrReadOnly) {
		t.Fatalf("write %v %v", res, err)
	}
	if r.get(r.holding, 10) != 65 {
		t.Errorf("holding 10 = %d", r.get(r.holding, 10))
	}
	// A service: a multi-register command.
	if _, err := d.CallService(context.Background(), "m", "setSchedule", map[string]any{"start": int64(6), "end": int64(22)}); err != nil {
		t.Fatal(err)
	}
	if r.get(r.holding, 100) != 6 || r.get(r.holding, 101) != 22 {
		t.Errorf("schedule registers %d, %d", r.get(r.holding, 100), r.get(r.holding, 101))
	}
	if _, err := d.CallService(context.Background(), "m", "explode", nil); !errors.Is(err, device.ErrUnknownService) {
		t.Errorf("unknown service: %v", err)
	}
}

func waitOnline(t *testing.T, host *devicetest.Host, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for host.State(name) != device.Online {
		if time.Now().After(deadline) {
			t.Fatalf("%s not online (state %q)", name, host.State(name))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBadConfig(t *testing.T) {
	d := modbus.New()
	_ = d.Open(context.Background(), nil, devicetest.NewHost())
	defer d.Close(context.Background())
	for cfg, says := range map[string]string{
		`{"endpoint": "udp://x", "properties": {}}`:                                                            "endpoint",
		`{"endpoint": "tcp://127.0.0.1:1", "properties": {"humidity": {"table": "input"}}}`:                    "properties.humidity",
		`{"endpoint": "tcp://127.0.0.1:1", "properties": {"setpoint": {"table": "input"}}}`:                    "input is read-only, the model says rw",
		`{"endpoint": "tcp://127.0.0.1:1", "properties": {"setpoint": {"table": "coil"}}}`:                     "a coil holds a bool",
		`{"endpoint": "tcp://127.0.0.1:1", "properties": {"temperature": {"table": "input", "type": "int8"}}}`: "type",
		`{"endpoint": "tcp://127.0.0.1:1", "properties": {"alarm": {"table": "holding", "bit": 16}}}`:          "bit",
		`{"endpoint": "tcp://127.0.0.1:1", "timeout": "soon", "properties": {}}`:                               "timeout",
		`{"endpoint": "tcp://127.0.0.1:1", "unit": 1, "colour": 1}`:                                            "colour",
	} {
		err := d.Attach(context.Background(), device.Device{Name: "x", Model: model(t), Config: json.RawMessage(cfg)})
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("config %s: %v, want an error saying %q", cfg, err, says)
		}
	}
}
