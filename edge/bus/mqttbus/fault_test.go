package mqttbus_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/testenv"
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
	data := brokertest.DataDir(t)
	b := brokertest.Start(t, &broker.Options{DataDir: data, AutosaveInterval: time.Second, RestartMin: 200 * time.Millisecond})
	ctx := context.Background()
	sub := brokertest.Connect(t, b, mqttbus.Options{ClientID: "fault-sub"})
	got := bustest.NewCollector()
	if _, err := sub.Subscribe(ctx, "fault/seq", got.Handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: faultMessages}); err != nil {
		t.Fatal(err)
	}
	// The kill must come after Mosquitto saved the subscriber's session,
	// or the broker restarts without it (and what is published before the
	// subscriber is back goes nowhere): wait until its file holds the
	// subscription.
	testenv.EventuallyWithin(t, "the subscriber's session saved", 30*time.Second, func() bool {
		db, _ := os.ReadFile(filepath.Join(data, "db", "mosquitto.db"))
		return bytes.Contains(db, []byte("fault/seq")) && bytes.Contains(db, []byte("fault-sub"))
	})

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

// TestDamagedQueueKeepsIntactMessages: 200 messages wait in the queue of a
// client that cannot reach its broker; a byte of a segment is flipped, and
// a crash left an empty new segment file behind. The next client on the
// queue delivers every message but the one the flipped byte was in, takes
// and delivers new messages (appended behind no bad header), and reports
// the damage in a log record and in its queue stats.
func TestDamagedQueueKeepsIntactMessages(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	dir := t.TempDir()
	var logs testenv.Buffer
	offline := func() *mqttbus.Client {
		c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://127.0.0.1:1"}, QueueDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	publish := func(c *mqttbus.Client, from, to int) {
		for i := from; i < to; i++ {
			if err := c.Publish(ctx, &bus.Message{Topic: "damaged/seq", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	c := offline()
	publish(c, 0, 200)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v, want one", segs)
	}
	seg, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	seg[len(seg)/2] ^= 0x01
	os.WriteFile(segs[0], seg, 0o600)
	os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), nil, 0o600)

	logs.Reset()
	c = offline()
	if got := c.QueueStats(); got.Messages != 199 || got.Damaged != 1 {
		t.Fatalf("queue stats after the damage %+v, want 199 messages and 1 damaged", got)
	}
	if !strings.Contains(logs.String(), "outbound queue damaged") {
		t.Fatalf("no log record of the damage; logs:\n%s", logs.String())
	}
	publish(c, 200, 205)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	sub := brokertest.Connect(t, b, mqttbus.Options{ClientID: "damaged-sub"})
	got := bustest.NewCollector()
	if _, err := sub.Subscribe(ctx, "damaged/seq", got.Handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, mqttbus.Options{QueueDir: dir})
	msgs := got.WaitCount(t, 204)
	seen := map[int]bool{}
	for _, m := range msgs {
		n, _ := strconv.Atoi(string(m.Payload))
		seen[n] = true
	}
	var missing []int
	for i := range 205 {
		if !seen[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) != 1 || len(seen) != 204 {
		t.Fatalf("missing %v of 205 (seen %d distinct), want exactly the one the flipped byte was in", missing, len(seen))
	}
	if d := pub.QueueStats().Damaged; d != 1 {
		t.Fatalf("queue stats report %d damaged, want 1", d)
	}
}

// TestDeletedSegmentReported: a segment file of a client's queue is
// deleted while the client is down. The next client reports it (a log
// record and the queue stats) and delivers every message the other
// segments hold.
func TestDeletedSegmentReported(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	dir := t.TempDir()
	var logs testenv.Buffer
	c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://127.0.0.1:1"}, QueueDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n { // 100 KiB each: three segments of 4 MiB
		payload := append([]byte(strconv.Itoa(i)+":"), make([]byte, 100<<10)...)
		if err := c.Publish(ctx, &bus.Message{Topic: "deleted/seq", Payload: payload, QoS: bus.AtLeastOnce}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("segments %v, want three or more", segs)
	}
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}

	sub := brokertest.Connect(t, b, mqttbus.Options{ClientID: "deleted-sub"})
	got := bustest.NewCollector()
	if _, err := sub.Subscribe(ctx, "deleted/seq", got.Handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, mqttbus.Options{QueueDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if d := pub.QueueStats().Damaged; d != 1 {
		t.Errorf("queue stats report %d damaged, want 1 (the missing segment)", d)
	}
	if !strings.Contains(logs.String(), "missing") {
		t.Errorf("no log record of the missing segment; logs:\n%s", logs.String())
	}
	// The last message is in the last segment, which is intact.
	last := got.WaitFor(t, "the last message", func(ms []*bus.Message) bool {
		for _, m := range ms {
			if strings.HasPrefix(string(m.Payload), strconv.Itoa(n-1)+":") {
				return true
			}
		}
		return false
	})
	seen := map[int]bool{}
	for _, m := range last {
		i, _ := strconv.Atoi(strings.SplitN(string(m.Payload), ":", 2)[0])
		seen[i] = true
	}
	// What is missing is one run: the deleted segment's records.
	first, lastMissing := -1, -1
	for i := range n {
		if !seen[i] {
			if first < 0 {
				first = i
			}
			lastMissing = i
		}
	}
	if first < 0 || lastMissing-first+1 != n-len(seen) {
		t.Errorf("missing %d messages (from %d to %d): want one run, the deleted segment's", n-len(seen), first, lastMissing)
	}
}
