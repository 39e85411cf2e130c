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
