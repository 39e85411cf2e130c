package bridge_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newBridge(t testing.TB, a, b bus.Bus, o *bridge.Options) *bridge.Bridge {
	t.Helper()
	br, err := bridge.New(context.Background(), a, b, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := br.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return br
}

func TestBothWaysWithoutLoops(t *testing.T) {
	brk := brokertest.Start(t, nil)
	ctx := context.Background()
	local := membus.New(nil)
	defer local.Close(ctx)
	remote := brokertest.Connect(t, brk, mqttbus.Options{})
	br := newBridge(t, local, remote, &bridge.Options{
		Name: "gw",
		Out:  []bridge.Route{{Filter: "sync/#", QoS: 1}, {Filter: "sensors/#", QoS: 1, RemovePrefix: "sensors/", AddPrefix: "gateways/gw1/sensors/"}},
		In:   []bridge.Route{{Filter: "sync/#", QoS: 1}},
	})

	// A client of the broker sees local sensor data under the new prefix.
	cloud := brokertest.Connect(t, brk, mqttbus.Options{})
	up := bustest.NewCollector()
	if _, err := cloud.Subscribe(ctx, "gateways/gw1/#", up.Handle, nil); err != nil {
		t.Fatal(err)
	}
	if err := local.Publish(ctx, &bus.Message{Topic: "sensors/t1", Payload: []byte("21.5"), QoS: 1,
		UserProperties: []bus.UserProperty{{Key: "unit", Value: "C"}}}); err != nil {
		t.Fatal(err)
	}
	got := up.WaitCount(t, 1)[0]
	if got.Topic != "gateways/gw1/sensors/t1" || string(got.Payload) != "21.5" {
		t.Errorf("forwarded %q %q", got.Topic, got.Payload)
	}
	if v, _ := got.Property("unit"); v != "C" {
		t.Errorf("user properties not kept: %v", got.UserProperties)
	}
	if v, _ := got.Property(bridge.OriginProperty); v != "gw" {
		t.Errorf("origin marker missing: %v", got.UserProperties)
	}

	// sync/# is bridged both ways: each side sees each message once.
	localSeen, remoteSeen := bustest.NewCollector(), bustest.NewCollector()
	if _, err := local.Subscribe(ctx, "sync/#", localSeen.Handle, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.Subscribe(ctx, "sync/#", remoteSeen.Handle, nil); err != nil {
		t.Fatal(err)
	}
	if err := local.Publish(ctx, &bus.Message{Topic: "sync/a", Payload: []byte("from-local"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := cloud.Publish(ctx, &bus.Message{Topic: "sync/b", Payload: []byte("from-cloud"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	localSeen.WaitCount(t, 2)
	remoteSeen.WaitCount(t, 2)
	time.Sleep(300 * time.Millisecond) // give an echo time to show up
	if n, m := len(localSeen.Messages()), len(remoteSeen.Messages()); n != 2 || m != 2 {
		t.Errorf("local saw %d and remote %d sync messages, want 2 each (no echoes)", n, m)
	}
	st := br.Stats()
	if st.Out.Looped == 0 || st.In.Looped == 0 {
		t.Errorf("no loop stopped: %+v", st)
	}
	if st.Out.Forwarded != 2 || st.In.Forwarded != 1 {
		t.Errorf("forwarded out %d in %d, want 2 and 1", st.Out.Forwarded, st.In.Forwarded)
	}
}

func TestRetainedStateCrosses(t *testing.T) {
	ctx := context.Background()
	a, b := membus.New(nil), membus.New(nil)
	defer a.Close(ctx)
	defer b.Close(ctx)
	_ = a.Publish(ctx, &bus.Message{Topic: "state/x", Payload: []byte("on"), QoS: 1, Retain: true})
	newBridge(t, a, b, &bridge.Options{Out: []bridge.Route{{Filter: "state/#", QoS: 1}}})
	_ = a.Publish(ctx, &bus.Message{Topic: "state/y", Payload: []byte("off"), QoS: 1, Retain: true})
	time.Sleep(50 * time.Millisecond)
	c := bustest.NewCollector()
	if _, err := b.Subscribe(ctx, "state/#", c.Handle, nil); err != nil {
		t.Fatal(err)
	}
	_ = b.Publish(ctx, &bus.Message{Topic: "state/end", QoS: 1})
	got := c.WaitTopic(t, "state/end")
	if len(got) != 3 || !got[0].Retain || !got[1].Retain {
		t.Errorf("b's retained state: %d messages, want state/x and state/y retained", len(got))
	}
}

func TestBadRoutes(t *testing.T) {
	ctx := context.Background()
	a, b := membus.New(nil), membus.New(nil)
	defer a.Close(ctx)
	defer b.Close(ctx)
	for name, o := range map[string]bridge.Options{
		"bad filter": {Out: []bridge.Route{{Filter: "a/#/b"}}},
		"bad qos":    {In: []bridge.Route{{Filter: "a", QoS: 3}}},
		"bad prefix": {Out: []bridge.Route{{Filter: "a", AddPrefix: "x/+/"}}},
	} {
		_, err := bridge.New(ctx, a, b, &o)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err := bridge.New(ctx, a, b, &bridge.Options{Out: []bridge.Route{{Filter: "ok"}, {Filter: "a/#/b"}}})
	if !errors.Is(err, bus.ErrInvalidFilter) {
		t.Errorf("second route invalid: %v", err)
	}
}

// TestFaultUpstreamDown30s: 10,000 numbered messages cross from the
// in-process bus to an upstream broker that is down for 30 s in the middle;
// every number arrives, in order.
func TestFaultUpstreamDown30s(t *testing.T) {
	const n = 10_000
	ctx := context.Background()
	upstream := brokertest.Start(t, &broker.Options{AutosaveInterval: time.Second})
	local := membus.New(nil)
	defer local.Close(ctx)
	uplink := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "gw-uplink"})
	br := newBridge(t, local, uplink, &bridge.Options{Name: "uplink", Out: []bridge.Route{{Filter: "telemetry/#", QoS: 1}}})

	cloud := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "cloud-consumer"})
	got := bustest.NewCollector()
	if _, err := cloud.Subscribe(ctx, "telemetry/#", got.Handle, &bus.SubscribeOptions{QoS: 1, Buffer: n}); err != nil {
		t.Fatal(err)
	}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := local.Publish(ctx, &bus.Message{Topic: "telemetry/seq", Payload: []byte(strconv.Itoa(i)), QoS: 1}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	send(0, 2000)
	got.WaitCount(t, 2000)
	if err := upstream.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	outage := time.Now()
	send(2000, 8000)
	for time.Since(outage) < 30*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	queued := br.Stats().Out.Queued
	if queued == 0 {
		t.Errorf("nothing queued during the outage")
	}
	if err := upstream.Start(ctx); err != nil {
		t.Fatal(err)
	}
	send(8000, n)
	msgs := got.WaitFor(t, "all 10,000 numbers", func(m []*bus.Message) bool { return bustest.CheckSequence(m, n) == nil })
	st := br.Stats()
	t.Logf("%d queued during the outage; received %d messages for %d numbers; bridge %+v", queued, len(msgs), n, st.Out)
	if st.Out.Dropped != 0 {
		t.Errorf("bridge dropped %d messages", st.Out.Dropped)
	}
}

// TestStatsCarryQueueDamage: the far side's count of damaged queue
// stretches shows in the bridge's stats.
func TestStatsCarryQueueDamage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	offline := func() *mqttbus.Client {
		c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://127.0.0.1:1"}, QueueDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	up := offline()
	for i := range 20 {
		if err := up.Publish(ctx, &bus.Message{Topic: "q/t", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
	}
	up.Close(ctx)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	seg, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	seg[len(seg)/2] ^= 0x10
	os.WriteFile(segs[0], seg, 0o600)
	up = offline()
	defer up.Close(ctx)
	local := membus.New(nil)
	defer local.Close(ctx)
	br := newBridge(t, local, up, &bridge.Options{Name: "dmg", Out: []bridge.Route{{Filter: "q/#", QoS: bus.AtLeastOnce}}})
	if s := br.Stats().Out; s.QueueDamaged != 1 || s.Queued != 19 {
		t.Fatalf("bridge stats %+v, want 19 queued and 1 damaged", s)
	}
}
