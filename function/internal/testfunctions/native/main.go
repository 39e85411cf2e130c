// Command native is an edgekit-native Go function for the host's tests
// (function/native.Start). TEST_BEHAVIOUR: echo (default), error, panic,
// sleep.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/edgekit/edgekit/function/native"
)

func main() {
	behaviour := os.Getenv("TEST_BEHAVIOUR")
	native.Start(func(ctx context.Context, event []byte) ([]byte, error) {
		switch behaviour {
		case "error":
			return nil, errors.New("native failure")
		case "panic":
			panic("native panic")
		case "sleep":
			<-ctx.Done()
			time.Sleep(time.Hour)
		case "bench":
			return event, nil
		}
		inv, _ := native.FromContext(ctx)
		native.Metric(ctx, "calls", 1)
		deadline, _ := ctx.Deadline()
		return json.Marshal(map[string]any{"event": json.RawMessage(event), "inv": inv, "deadline_ok": time.Until(deadline) > 0})
	})
}
