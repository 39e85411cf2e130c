package modbus_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/device/modbus"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

// TestEndToEnd: a Modbus device behind the Manager and the bus, on membus
// and through Mosquitto. A register change appears as a validated report on
// the device's topic; a set request writes the register and answers; an
// out-of-range set is refused with the reason and writes nothing; the
// server going away takes the device offline within the poll window and
// reads fail fast; its return brings it online with the desired value
// written again.
func TestEndToEnd(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		ctx := context.Background()
		addr := freeAddr(t)
		srv := startServer(t, addr, newRegisters())
		regs := srv.regs
		regs.set(regs.input, 0, 215)
		regs.set(regs.holding, 10, 50)

		reports := make(chan *bus.Message, 100)
		states := make(chan string, 100)
		sub := func(filter string, f func(*bus.Message)) {
			if _, err := b.Subscribe(ctx, filter, func(_ context.Context, m *bus.Message) { f(m) }, nil); err != nil {
				t.Fatal(err)
			}
		}
		sub("devices/boiler/properties", func(m *bus.Message) { reports <- m })
		sub("devices/boiler/state", func(m *bus.Message) { states <- string(m.Payload) })

		m := device.NewManager(&device.ManagerOptions{Publish: devicebus.Publisher(b, ""), CallTimeout: time.Second})
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		rr, err := devicebus.Serve(ctx, b, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rr.Close(context.Background()) })
		if err := m.AddDriver(ctx, "modbus", modbus.New(), nil); err != nil {
			t.Fatal(err)
		}
		poll := []device.PollGroup{{Properties: []string{"temperature", "setpoint"}, Every: 50 * time.Millisecond}}
		if err := m.Attach(ctx, "modbus", deviceOn(t, "boiler", srv.url, 1), poll); err != nil {
			t.Fatal(err)
		}

		waitFor := func(what string, ch chan *bus.Message, ok func(string) bool) {
			t.Helper()
			deadline := time.After(10 * time.Second)
			for {
				select {
				case r := <-ch:
					if ok(string(r.Payload)) {
						return
					}
				case <-deadline:
					t.Fatalf("no %s", what)
				}
			}
		}
		waitFor("first report", reports, func(p string) bool { return strings.Contains(p, `"temperature":21.5`) })
		regs.set(regs.input, 0, 230) // the device changes a register
		waitFor("changed report", reports, func(p string) bool { return strings.Contains(p, `"temperature":23`) })

		replies := make(chan *bus.Message, 10)
		sub("replies/e2e", func(m *bus.Message) { replies <- m })
		var corr atomic.Int32
		request := func(topic, payload string) string {
			t.Helper()
			id := strconv.Itoa(int(corr.Add(1)))
			if err := b.Publish(ctx, &bus.Message{Topic: topic, Payload: []byte(payload), QoS: bus.AtLeastOnce, ResponseTopic: "replies/e2e", CorrelationData: []byte(id)}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-replies:
				return string(r.Payload)
			case <-time.After(10 * time.Second):
				t.Fatalf("no reply on %s", topic)
				return ""
			}
		}
		if got := request("devices/boiler/set", `{"properties": {"setpoint": 65}}`); got != `{"results":{"setpoint":null}}` || regs.get(regs.holding, 10) != 65 {
			t.Errorf("set: %s, register %d", got, regs.get(regs.holding, 10))
		}
		if got := request("devices/boiler/set", `{"properties": {"setpoint": 95}}`); !strings.Contains(got, "properties.setpoint: 95 above max 90") || regs.get(regs.holding, 10) != 65 {
			t.Errorf("out-of-range set: %s, register %d", got, regs.get(regs.holding, 10))
		}

		// The server goes away: offline within the poll window, and
		// reads fail fast.
		srv.stop()
		waitState(t, states, "offline")
		// ErrOffline at once, not a timeout of a request to the server.
		if _, err := m.Get(ctx, "boiler", []string{"setpoint"}); !errors.Is(err, device.ErrOffline) {
			t.Errorf("read while offline: %v", err)
		}
		if _, err := m.Set(ctx, "boiler", map[string]any{"setpoint": 80}); !errors.Is(err, device.ErrOffline) {
			t.Errorf("set while offline: %v", err)
		}
		// It returns (its registers lost): online, and the desired
		// value is written again.
		regs.set(regs.holding, 10, 30)
		srv.start(t)
		waitState(t, states, "online")
		deadline := time.Now().Add(10 * time.Second)
		for regs.get(regs.holding, 10) != 80 {
			if time.Now().After(deadline) {
				t.Fatalf("the desired setpoint was not written again: register %d", regs.get(regs.holding, 10))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func waitState(t *testing.T, states chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-states:
			if strings.Contains(s, `"state":"`+want+`"`) {
				return
			}
		case <-deadline:
			t.Fatalf("device not %s", want)
		}
	}
}

// TestSlowEndpoint: ten devices on a slow endpoint, busy, and one on a fast
// one: the fast device's reads are not held up.
func TestSlowEndpoint(t *testing.T) {
	slowRegs := newRegisters()
	slowRegs.delay = 20 * time.Millisecond
	slow := startServer(t, freeAddr(t), slowRegs)
	fast := startServer(t, freeAddr(t), newRegisters())
	m := device.NewManager(&device.ManagerOptions{CallTimeout: 5 * time.Second})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	ctx := context.Background()
	if err := m.AddDriver(ctx, "modbus", modbus.New(), nil); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := m.Attach(ctx, "modbus", deviceOn(t, "slow-"+strconv.Itoa(i), slow.url, i+1), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Attach(ctx, "modbus", deviceOn(t, "fast", fast.url, 1), nil); err != nil {
		t.Fatal(err)
	}
	measure := func() time.Duration {
		var samples []time.Duration
		for range 20 {
			start := time.Now()
			if _, err := m.Get(ctx, "fast", []string{"temperature"}); err != nil {
				t.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
		var worst time.Duration
		for _, s := range samples {
			worst = max(worst, s)
		}
		return worst
	}
	quiet := measure()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = m.Get(ctx, "slow-"+strconv.Itoa(i), []string{"temperature", "setpoint"})
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	busy := measure()
	close(stop)
	wg.Wait()
	// The slow endpoint's requests take 20 ms each and queue ten devices
	// deep; a fast read that waited behind them would take ~400 ms.
	if busy > 15*time.Millisecond+3*quiet {
		t.Errorf("fast device's worst read: %v with the slow endpoint busy, %v without", busy, quiet)
	}
}
