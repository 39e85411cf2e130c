package timer_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/timer"
)

// FuzzParams: whatever a deployment carries as a timer trigger's params,
// the factory makes a trigger or refuses with ErrInvalidConfig; it never
// panics.
func FuzzParams(f *testing.F) {
	for _, seed := range []string{`{"every":"1m"}`, `{"cron":"*/5 * * * * *","timezone":"Europe/Berlin","overlap":"queue"}`,
		`{"at":"2026-12-01T08:00:00Z","missed":"run-once","data":{"a":1}}`, `{"every":"1s","cron":"x"}`, `[]`, `{"cron":"@every 1s"}`} {
		f.Add(seed)
	}
	sched, err := timer.NewScheduler(nil)
	if err != nil {
		f.Fatal(err)
	}
	defer sched.Close(context.Background())
	factory := sched.Factory()
	f.Fuzz(func(t *testing.T, params string) {
		_, err := factory(trigger.Config{Name: "t", Type: timer.Type, Function: "f", Params: json.RawMessage(params)})
		if err != nil && !errors.Is(err, trigger.ErrInvalidConfig) {
			t.Fatalf("params %q: %v does not wrap ErrInvalidConfig", params, err)
		}
	})
}
