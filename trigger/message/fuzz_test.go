package message_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
)

// FuzzParams: whatever a deployment carries as a message trigger's params,
// the factory makes a trigger or refuses with ErrInvalidConfig; it never
// panics.
func FuzzParams(f *testing.F) {
	for _, seed := range []string{`{"filter":"devices/+/telemetry"}`, `{"filter":"$share/g/a/#","qos":0,"concurrency":8,"retries":0}`,
		`{"filter":"a","backoff":"10ms","dead_letter":"d","output":"o","max_payload":1}`, `{"filter":"a/#/b"}`, `null`, `{"qos":-1}`} {
		f.Add(seed)
	}
	factory := message.Factory(membus.New(nil), nil)
	f.Fuzz(func(t *testing.T, params string) {
		_, err := factory(trigger.Config{Name: "t", Type: message.Type, Function: "f", Params: json.RawMessage(params)})
		if err != nil && !errors.Is(err, trigger.ErrInvalidConfig) {
			t.Fatalf("params %q: %v does not wrap ErrInvalidConfig", params, err)
		}
	})
}
