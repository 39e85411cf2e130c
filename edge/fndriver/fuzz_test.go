package fndriver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicetest"
	"github.com/edgekit/edgekit/edge/fndriver"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/invoke"
)

// answering is a driver function that answers every op with payload, or
// fails it with err: what a hostile driver process can make the gateway
// read.
type answering struct {
	payload []byte
	err     error
}

func (a *answering) Invoke(context.Context, string, invoke.Request) (invoke.Response, error) {
	return invoke.Response{Payload: a.payload}, a.err
}

// FuzzDriverAnswers: whatever a driver answers a read, a write or a
// service call, the adapter returns readings that fit the model or errors
// naming the device, and does not panic.
func FuzzDriverAnswers(f *testing.F) {
	for _, seed := range []string{`{"properties":{"temperature":21.5,"setpoint":7}}`, `{"properties":{"temperature":"hot"},"errors":{"setpoint":{"errorType":"Offline","errorMessage":"x"}}}`,
		`{"errors":{"setpoint":null}}`, `{"output":{"ok":true}}`, `{"output":{"ok":"yes"}}`, `[]`, `null`, `{"properties":{"temperature":1e999}}`, "\xff"} {
		f.Add([]byte(seed), "")
	}
	f.Add([]byte(`{}`), "UnknownProperty")
	m := model(f)
	f.Fuzz(func(t *testing.T, payload []byte, errType string) {
		a := &answering{payload: payload}
		if errType != "" {
			a.err = &invoke.Error{Type: errType, Message: "refused"}
		}
		ctx := context.Background()
		d := fndriver.NewSet(a, nil).Driver("f")
		if err := d.Open(ctx, nil, devicetest.NewHost()); err != nil {
			t.Fatal(err)
		}
		defer d.Close(ctx)
		if err := d.Attach(ctx, device.Device{Name: "t1", Model: m}); err != nil && errType == "" {
			t.Fatalf("Attach: %v", err)
		}
		if errType != "" {
			return // the attach was refused; nothing more to ask
		}
		if got, err := d.ReadProperties(ctx, "t1", nil); err == nil {
			for id, r := range got {
				if r.Err == nil {
					if _, err := m.PropertyValue(id, r.Value); err != nil {
						t.Fatalf("read %s = %#v, which the model refuses: %v", id, r.Value, err)
					}
				}
			}
		} else if !errors.Is(err, device.ErrOffline) {
			t.Fatalf("a bad answer to a read: %v, want ErrOffline", err)
		}
		_, _ = d.WriteProperties(ctx, "t1", map[string]any{"setpoint": int64(3)})
		if out, err := d.CallService(ctx, "t1", "reset", nil); err == nil {
			if _, err := m.ServiceOutput("reset", out); err != nil {
				t.Fatalf("service output %v, which the model refuses: %v", out, err)
			}
		}
	})
}

// FuzzServe: whatever a driver process calls with, the gateway answers an
// error naming the method, or takes it, and does not panic.
func FuzzServe(f *testing.F) {
	for _, seed := range []struct{ method, args string }{
		{fnapi.DriverReport, `{"device":"t1","properties":{"temperature":21}}`}, {fnapi.DriverReport, `{"device":"t1","properties":{"temperature":"x"},"time":-1}`},
		{fnapi.DriverEvent, `{"device":"t1","event":"overheat","output":{"temperature":90}}`}, {fnapi.DriverState, `{"device":"t1","state":"offline","cause":"x"}`},
		{fnapi.DriverHello, `{}`}, {fnapi.DriverReport, `{"device":"t1","properties":{"temperature":21},"extra":1}`}, {fnapi.DriverState, `[`},
	} {
		f.Add(seed.method, []byte(seed.args))
	}
	m := model(f)
	f.Fuzz(func(t *testing.T, method string, args []byte) {
		ctx := context.Background()
		set := fndriver.NewSet(&answering{payload: []byte(`null`)}, nil)
		d := set.Driver("f")
		host := devicetest.NewHost()
		if err := d.Open(ctx, nil, host); err != nil {
			t.Fatal(err)
		}
		defer d.Close(ctx)
		if err := d.Attach(ctx, device.Device{Name: "t1", Model: m}); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		defer close(done)
		fn := function.Spec{Name: "f"}
		if _, err := set.Serve(ctx, &function.Call{Function: fn, Instance: "1", InstanceDone: done, Method: fnapi.DriverHello}); err != nil {
			t.Fatalf("hello: %v", err)
		}
		_, err := set.Serve(ctx, &function.Call{Function: fn, Instance: "1", InstanceDone: done, Method: method, Args: json.RawMessage(args)})
		if err != nil && !strings.Contains(err.Error(), method) && !strings.Contains(err.Error(), fmt.Sprintf("%q", method)) {
			t.Fatalf("%s refused with %v, which does not name it", method, err)
		}
		for _, r := range host.Reports() {
			if r.Event == "" {
				for id, v := range r.Values {
					if _, err := m.PropertyValue(id, v); err != nil {
						t.Fatalf("a report of %s = %#v reached the host, which the model refuses", id, v)
					}
				}
			}
		}
	})
}
