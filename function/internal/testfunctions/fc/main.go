// Command fc is a Function Compute function for the host's tests, written
// the way fc-runtime-go-sdk's documentation shows (a handler taking the
// context and a typed event, fc.Start, fccontext.FromContext), on the
// runtime client in runtime.go.
package main

import (
	"context"
	"errors"
	"time"

	"github.com/edgekit/edgekit/function/internal/testfunctions/serviceenv"
)

// StructEvent is the event.
type StructEvent struct {
	N    int    `json:"n"`
	Fail bool   `json:"fail"`
	Key  string `json:"key"`
}

// HandleRequest answers with the event and what FromContext says; an
// event with fail set is an error.
func HandleRequest(ctx context.Context, event StructEvent) (map[string]any, error) {
	if event.Fail {
		return nil, errors.New("asked to fail")
	}
	lc, _ := FromContext(ctx)
	deadline, _ := ctx.Deadline()
	return map[string]any{
		"fc":          true,
		"event":       event,
		"request_id":  lc.RequestID,
		"function":    lc.Function,
		"service":     lc.Service,
		"region":      lc.Region,
		"account_id":  lc.AccountId,
		"deadline_in": time.Until(deadline).Milliseconds(),
		"headers":     lc.Headers,
		"env":         serviceenv.Read(),
	}, nil
}

func main() {
	Start(HandleRequest)
}
