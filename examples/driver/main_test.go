package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"encoding/json"
	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicetest"
	"github.com/edgekit/edgekit/internal/testenv"
)

func simulated(t *testing.T) (string, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go simulate(l)
	return l.Addr().String(), func() { l.Close() }
}

// TestWalkthrough runs the program as `go run ./examples/driver` does.
func TestWalkthrough(t *testing.T) {
	addr, stop := simulated(t)
	defer stop()
	out := &testenv.Buffer{}
	if err := run(context.Background(), out, addr, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		`devices/thermostat/state {"device":"thermostat","state":"online"`,
		`devices/thermostat/properties {"device":"thermostat"`,
		`set {"properties": {"target": 22}} → {"results":{"target":null}}`,
		`properties.target: 45 above max 30`,
		`"target":22`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// TestConformance: the walkthrough's driver passes the suite every driver
// runs.
func TestConformance(t *testing.T) {
	addr, stop := simulated(t)
	defer stop()
	model, err := device.ParseTSL([]byte(thermostatTSL))
	if err != nil {
		t.Fatal(err)
	}
	devicetest.Run(t, devicetest.Harness{
		New: func(*testing.T) device.Driver { return &lineDriver{} },
		Device: func(t *testing.T, name string) device.Device {
			return device.Device{Name: name, Model: model, Config: json.RawMessage(`{"address": "` + addr + `"}`)}
		},
		Writes: map[string]any{"target": 21},
	})
}
