package native_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/native"
)

// A function that reads a boiler and publishes an alarm above the
// threshold its configuration sets. Its manifest lets it reach the
// boiler: "permissions": {"devices": ["boiler-1"]}; it publishes under its
// own prefix, outputs/{name}/, which needs no permission.
func Example() {
	native.Start(func(ctx context.Context, event []byte) ([]byte, error) {
		var cfg struct{ Threshold float64 }
		if raw, err := native.Config(ctx); err == nil {
			_ = json.Unmarshal(raw, &cfg)
		}
		got, err := native.GetProperties(ctx, "boiler-1", "temperature")
		if errors.Is(err, fnapi.ErrForbidden) {
			return nil, fmt.Errorf("the manifest does not list boiler-1: %w", err)
		} else if err != nil {
			return nil, err
		}
		var t float64
		if err := json.Unmarshal(got.Properties["temperature"], &t); err != nil {
			return nil, fmt.Errorf("temperature: %s", got.Errors["temperature"])
		}
		if t > cfg.Threshold {
			alarm, _ := json.Marshal(map[string]any{"device": "boiler-1", "temperature": t})
			if err := native.Publish(ctx, "outputs/boiler-alarm/high", alarm, &native.PublishOptions{QoS: 1}); err != nil {
				return nil, err
			}
		}
		return json.Marshal(t)
	})
}

// lamp is a driver of one kind of device: a lamp whose brightness it keeps.
type lamp struct{ brightness map[string]int64 }

func (l *lamp) Attach(_ context.Context, t fnapi.Thing) error {
	l.brightness[t.Name] = 0
	return nil
}

func (l *lamp) Detach(_ context.Context, name string) error {
	delete(l.brightness, name)
	return nil
}

func (l *lamp) GetProperties(_ context.Context, t fnapi.Thing, ids []string) (map[string]any, error) {
	return map[string]any{"brightness": l.brightness[t.Name]}, nil
}

func (l *lamp) SetProperties(_ context.Context, t fnapi.Thing, values map[string]json.RawMessage) (map[string]error, error) {
	var b int64
	if err := json.Unmarshal(values["brightness"], &b); err != nil {
		return map[string]error{"brightness": err}, nil
	}
	l.brightness[t.Name] = b
	return nil, nil
}

func (l *lamp) CallService(_ context.Context, t fnapi.Thing, service string, _ map[string]json.RawMessage) (map[string]any, error) {
	return nil, fnapi.Errorf(fnapi.ErrUnknownService, "%s", service)
}

// A device driver as a native Go function: deployed as a driver app
// ("driver": true), it is given the devices the deployment binds to it,
// and the gateway's reads, writes and service calls for them reach the
// Driver, not the handler.
func ExampleStartWith_driver() {
	native.StartWith(func(context.Context, []byte) ([]byte, error) { return nil, nil },
		&native.Options{Driver: &lamp{brightness: map[string]int64{}}})
}

// A function that samples a sensor publishes a stream without waiting for
// each message's answer, and flushes once at the end to learn whether the
// gateway refused any of them.
func ExampleFlush() {
	native.Start(func(ctx context.Context, event []byte) ([]byte, error) {
		for i := range 1000 {
			sample := []byte(fmt.Sprint(i))
			if err := native.Publish(ctx, "outputs/sampler/raw", sample, &native.PublishOptions{QoS: 1, NoWait: true}); err != nil {
				return nil, err
			}
		}
		if err := native.Flush(ctx); err != nil {
			return nil, fmt.Errorf("samples refused: %w", err)
		}
		return nil, nil
	})
}
