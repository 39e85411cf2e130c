package mqttcall_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger/mqttcall"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCalls: replies carry the result or the error, with the request's
// correlation data; bad requests are answered naming what is wrong; a
// request without a response topic runs without a reply. On membus and on
// mqttbus over Mosquitto.
func TestCalls(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var asyncRuns atomic.Int32
		h, err := function.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close(context.Background()) })
		_ = h.Register("greet", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			if string(req.Payload) == `"fail"` {
				return invoke.Response{}, errors.New("cannot greet")
			}
			if string(req.Payload) == `"async"` {
				asyncRuns.Add(1)
			}
			return invoke.Response{Payload: []byte(`"hello ` + strings.Trim(string(req.Payload), `"`) + `"`), ContentType: "application/json"}, nil
		}))
		if err := h.Deploy(context.Background(), function.Spec{Name: "greet", Version: "1", Runtime: function.RuntimeGo, Handler: "greet"}); err != nil {
			t.Fatal(err)
		}
		srv, err := mqttcall.Serve(context.Background(), b, h, &mqttcall.Options{Prefix: "gw1/", MaxPayload: 100})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close(context.Background()) })

		replies := make(chan *bus.Message, 10)
		if _, err := b.Subscribe(context.Background(), "replies/t", func(_ context.Context, m *bus.Message) { replies <- m }, nil); err != nil {
			t.Fatal(err)
		}
		call := func(topic, payload string, corr string) *bus.Message {
			t.Helper()
			m := &bus.Message{Topic: topic, Payload: []byte(payload), QoS: bus.AtLeastOnce, ResponseTopic: "replies/t"}
			if corr != "" {
				m.CorrelationData = []byte(corr)
			}
			if err := b.Publish(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-replies:
				return r
			case <-time.After(10 * time.Second):
				t.Fatalf("no reply to %s %s", topic, payload)
				return nil
			}
		}
		r := call("gw1/functions/greet/invoke", `"boiler"`, "c1")
		if string(r.Payload) != `"hello boiler"` || string(r.CorrelationData) != "c1" {
			t.Errorf("reply %q, correlation %q", r.Payload, r.CorrelationData)
		}
		for _, tc := range []struct{ topic, payload, corr, typ, says string }{
			{"gw1/functions/greet/invoke", `"fail"`, "c2", "*errors.errorString", "cannot greet"},
			{"gw1/functions/nobody/invoke", `{}`, "c3", "FunctionNotFound", "nobody"},
			{"gw1/functions/greet/invoke", `{}`, "", "BadRequest", "correlation data"},
			{"gw1/functions/greet/invoke", strings.Repeat("x", 101), "c5", "BadRequest", "payload: 101 bytes"},
		} {
			r := call(tc.topic, tc.payload, tc.corr)
			typ, _ := r.Property("edgekit-error-type")
			var body struct{ Error string }
			_ = json.Unmarshal(r.Payload, &body)
			if typ != tc.typ || !strings.Contains(body.Error, tc.says) || string(r.CorrelationData) != tc.corr {
				t.Errorf("%s %s: reply %s (type %q), want type %s saying %q", tc.topic, tc.payload, r.Payload, typ, tc.typ, tc.says)
			}
		}
		// Asynchronous: no response topic, no reply.
		if err := b.Publish(context.Background(), &bus.Message{Topic: "gw1/functions/greet/invoke", Payload: []byte(`"async"`), QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for asyncRuns.Load() != 1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if asyncRuns.Load() != 1 {
			t.Error("the asynchronous call did not run")
		}
		select {
		case r := <-replies:
			t.Errorf("a reply to an asynchronous call: %s", r.Payload)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

// TestResponseTopicOutsideThePrefix: a request whose response topic is not
// under the reply prefix (here the gateway's own status topic) is refused:
// the function does not run and nothing is published there. A bad prefix
// is refused at Serve.
func TestResponseTopicOutsideThePrefix(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var runs atomic.Int32
		h, err := function.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close(context.Background()) })
		_ = h.Register("count", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			runs.Add(1)
			return invoke.Response{Payload: []byte(`{"forged":true}`)}, nil
		}))
		if err := h.Deploy(context.Background(), function.Spec{Name: "count", Version: "1", Runtime: function.RuntimeGo, Handler: "count"}); err != nil {
			t.Fatal(err)
		}
		if _, err := mqttcall.Serve(context.Background(), b, h, &mqttcall.Options{ResponsePrefix: "replies"}); err == nil {
			t.Fatal("a response prefix without a trailing slash was accepted")
		}
		srv, err := mqttcall.Serve(context.Background(), b, h, &mqttcall.Options{Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close(context.Background()) })
		got := make(chan *bus.Message, 10)
		for _, f := range []string{"gateway/status", "replies/ok"} {
			if _, err := b.Subscribe(context.Background(), f, func(_ context.Context, m *bus.Message) { got <- m }, nil); err != nil {
				t.Fatal(err)
			}
		}
		for _, rt := range []string{"gateway/status", "replies/ok"} {
			if err := b.Publish(context.Background(), &bus.Message{Topic: "functions/count/invoke", Payload: []byte(`{}`), QoS: bus.AtLeastOnce,
				ResponseTopic: rt, CorrelationData: []byte("c")}); err != nil {
				t.Fatal(err)
			}
		}
		// One request at a time (Concurrency 1), in order of arrival: the
		// reply to the second comes after the first was done with.
		select {
		case m := <-got:
			if m.Topic != "replies/ok" {
				t.Fatalf("a reply went to %s", m.Topic)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no reply to the request under the prefix")
		}
		if n := runs.Load(); n != 1 {
			t.Fatalf("the function ran %d times, want once (the refused request must not run)", n)
		}
		select {
		case m := <-got:
			t.Fatalf("a second message, on %s", m.Topic)
		default:
		}
	})
}
