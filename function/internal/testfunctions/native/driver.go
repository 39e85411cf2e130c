package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/native"
)

// thermometers is behaviour driver: the thermometers of
// function/testdata/drivers in Go, through native.Driver. Device config:
// start, slow; driver config (the function's): interval, threshold.
// Services: reset, heat {to}, crash, hang.
type thermometers struct {
	mu      sync.Mutex
	things  map[string]*thermometer
	started bool
}

type thermometer struct {
	Temperature float64 `json:"temperature"`
	Setpoint    int64   `json:"setpoint"`
	slow        bool
}

type driverConfig struct {
	Interval  int      `json:"interval"`
	Threshold *float64 `json:"threshold"`
}

func config() driverConfig {
	var c driverConfig
	_ = json.Unmarshal([]byte(os.Getenv("EDGEKIT_FUNCTION_CONFIG")), &c)
	return c
}

func (d *thermometers) Attach(ctx context.Context, t fnapi.Thing) error {
	var c struct {
		Start *float64 `json:"start"`
		Slow  bool     `json:"slow"`
	}
	_ = json.Unmarshal(t.Config, &c)
	d.mu.Lock()
	defer d.mu.Unlock()
	th, ok := d.things[t.Name]
	if !ok {
		th = &thermometer{Temperature: 20, Setpoint: 50}
		if c.Start != nil {
			th.Temperature = *c.Start
		}
		d.things[t.Name] = th
	}
	th.slow = c.Slow
	if cfg := config(); cfg.Interval > 0 && !d.started {
		d.started = true
		go d.report(context.WithoutCancel(ctx), time.Duration(cfg.Interval)*time.Millisecond)
	}
	return nil
}

// report tells every thermometer's temperature each interval, for the
// life of the process.
func (d *thermometers) report(ctx context.Context, every time.Duration) {
	for range time.Tick(every) {
		d.mu.Lock()
		names := make([]string, 0, len(d.things))
		for name := range d.things {
			names = append(names, name)
		}
		d.mu.Unlock()
		for _, name := range names {
			if err := d.tell(ctx, name); err != nil {
				fmt.Fprintln(os.Stderr, "report", name, err)
			}
		}
	}
}

func (d *thermometers) tell(ctx context.Context, name string) error {
	d.mu.Lock()
	th, ok := d.things[name]
	var t float64
	if ok {
		t = th.Temperature
	}
	d.mu.Unlock()
	if !ok {
		return nil
	}
	if _, err := native.Report(ctx, name, map[string]any{"temperature": t}, time.Time{}); err != nil {
		return err
	}
	if c := config(); c.Threshold != nil && t > *c.Threshold {
		return native.Emit(ctx, name, "overheat", map[string]any{"temperature": t})
	}
	return nil
}

func (d *thermometers) Detach(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.things, name)
	return nil
}

func (d *thermometers) get(name string) *thermometer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.things[name]
}

func (d *thermometers) GetProperties(ctx context.Context, t fnapi.Thing, ids []string) (map[string]any, error) {
	th := d.get(t.Name)
	if th.slow {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]any{}
	for _, id := range ids {
		switch id {
		case "temperature":
			out[id] = th.Temperature
		case "setpoint":
			out[id] = th.Setpoint
		default:
			out[id] = fnapi.Errorf(fnapi.ErrUnknownProperty, "%s: this thermometer has none", id)
		}
	}
	return out, nil
}

func (d *thermometers) SetProperties(_ context.Context, t fnapi.Thing, values map[string]json.RawMessage) (map[string]error, error) {
	th := d.get(t.Name)
	d.mu.Lock()
	defer d.mu.Unlock()
	res := map[string]error{}
	for id, raw := range values {
		if id != "setpoint" {
			res[id] = fnapi.Errorf(fnapi.ErrReadOnly, "%s", id)
			continue
		}
		if err := json.Unmarshal(raw, &th.Setpoint); err != nil {
			res[id] = err
		}
	}
	return res, nil
}

func (d *thermometers) CallService(ctx context.Context, t fnapi.Thing, service string, input map[string]json.RawMessage) (map[string]any, error) {
	th := d.get(t.Name)
	switch service {
	case "reset":
		d.mu.Lock()
		th.Temperature = 20
		d.mu.Unlock()
		return map[string]any{"ok": true}, nil
	case "heat":
		var to float64
		if err := json.Unmarshal(input["to"], &to); err != nil {
			return nil, fnapi.Errorf(fnapi.ErrInvalidValue, "to: %v", err)
		}
		d.mu.Lock()
		th.Temperature = to
		d.mu.Unlock()
		return map[string]any{"ok": true}, d.tell(ctx, t.Name)
	case "crash":
		os.Exit(3)
	case "hang":
		select {} // a driver stuck for good: its context is ignored
	}
	return nil, fnapi.Errorf(fnapi.ErrUnknownService, "%s", service)
}

// driverCall is the handler's event under behaviour driver: the test
// speaks the driver API through it.
func driverCall(ctx context.Context, event []byte) ([]byte, error) {
	var e struct {
		Do         string         `json:"do"`
		Device     string         `json:"device"`
		Properties map[string]any `json:"properties"`
		Event      string         `json:"event"`
		Output     map[string]any `json:"output"`
		State      string         `json:"state"`
		Cause      string         `json:"cause"`
		N          int            `json:"n"`
	}
	if err := json.Unmarshal(event, &e); err != nil {
		return nil, err
	}
	var err error
	answer := map[string]any{"ok": true}
	switch e.Do {
	case "report":
		var refused map[string]string
		refused, err = native.Report(ctx, e.Device, e.Properties, time.Time{})
		answer = map[string]any{"refused": refused}
	case "event":
		err = native.Emit(ctx, e.Device, e.Event, e.Output)
	case "state":
		err = native.SetState(ctx, e.Device, e.State, e.Cause)
	case "flood":
		for i := range e.N {
			if _, err = native.Report(ctx, e.Device, map[string]any{"temperature": 20 + i%10}, time.Time{}); err != nil {
				break
			}
		}
	}
	if fe, ok := err.(*fnapi.Error); ok {
		return json.Marshal(map[string]any{"type": fe.Type, "message": fe.Message})
	} else if err != nil {
		return nil, err
	}
	return json.Marshal(answer)
}
