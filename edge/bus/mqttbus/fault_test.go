package mqttbus_test

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

const faultMessages = 10_000

// TestFaultBrokerKilled: Mosquitto is SIGKILLed while a publisher sends
// 10,000 numbered QoS 1 messages; edge/broker restarts it and every number
// arrives, in order (duplicates allowed).
func TestFaultBrokerKilled(t *testing.T) {
	runFault(t, false)
}

// TestFaultBrokerKilledAndPublisherRestarted: the same, and the publisher
// is closed and opened again on the same queue directory while the broker
// is down.
func TestFaultBrokerKilledAndPublisherRestarted(t *testing.T) {
	runFault(t, true)
}

func runFault(t *testing.T, restartPublisher bool) {
	b := brokertest.Start(t, &broker.Options{AutosaveInterval: time.Second, RestartMin: 200 * time.Millisecond})
	ctx := context.Background()
	sub := brokertest.Connect(t, b, mqttbus.Options{ClientID: "fault-sub"})
	got := bustest.NewCollector()
	if _, err := sub.Subscribe(ctx, "fault/seq", got.Handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: faultMessages}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the subscriber's session is autosaved

	queueDir := t.TempDir()
	popts := mqttbus.Options{ClientID: "fault-pub", QueueDir: queueDir}
	pub := brokertest.Connect(t, b, popts)
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := pub.Publish(ctx, &bus.Message{Topic: "fault/seq", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	send(0, 3000)
	pid := b.Status().PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	send(3000, 3500)
	if restartPublisher {
		if err := pub.Close(ctx); err != nil {
			t.Fatal(err)
		}
		st := pub.Stats()
		t.Logf("publisher closed with %d messages queued", st.Queue.Messages)
		pub = brokertest.Connect(t, b, popts) // reopens the queue from disk
	}
	send(3500, faultMessages)

	msgs := got.WaitFor(t, "all 10,000 numbers", func(m []*bus.Message) bool {
		return bustest.CheckSequence(m, faultMessages) == nil
	})
	if st := b.Status(); st.Restarts < 1 || st.PID == pid {
		t.Errorf("broker was not restarted: %+v", st)
	}
	t.Logf("received %d messages for %d numbers (%d duplicates)", len(msgs), faultMessages, len(msgs)-faultMessages)
}
