package mqttbus_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

// cutter forwards loopback TCP connections to addr until cut, which drops
// them all at once, as a lost link does.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutter(t *testing.T, addr string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", addr)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			c.wg.Add(2)
			go func() { defer c.wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
			go func() { defer c.wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() { c.ln.Close(); c.cut(); c.wg.Wait() })
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// TestWill: the broker publishes the Will, with its user properties and
// retained, when the link is lost; not when the client disconnects.
func TestWill(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	watcher := brokertest.Connect(t, b, mqttbus.Options{})
	got := make(chan *bus.Message, 4)
	if _, err := watcher.Subscribe(ctx, "presence/#", func(_ context.Context, m *bus.Message) { got <- m }, nil); err != nil {
		t.Fatal(err)
	}
	will := &bus.Message{Topic: "presence/gw-1", Payload: []byte(`{"online":false}`), QoS: bus.AtLeastOnce, Retain: true,
		UserProperties: []bus.UserProperty{{Key: "edgekit-instance", Value: "gw-1"}}}

	polite := brokertest.Connect(t, b, mqttbus.Options{Will: will})
	if err := polite.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cut := newCutter(t, b.Addrs()[0])
	connects := make(chan struct{}, 4)
	c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://" + cut.ln.Addr().String()}, Will: will,
		ReconnectMin: 10 * time.Millisecond, OnConnect: func() { connects <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	<-connects
	cut.cut()
	m := <-got
	if string(m.Payload) != `{"online":false}` || len(m.UserProperties) != 1 || m.UserProperties[0].Value != "gw-1" {
		t.Errorf("will: %+v", m)
	}
	// Retained: a client that comes later reads it.
	late := brokertest.Connect(t, b, mqttbus.Options{})
	retained := make(chan *bus.Message, 1)
	if _, err := late.Subscribe(ctx, "presence/gw-1", func(_ context.Context, m *bus.Message) { retained <- m }, nil); err != nil {
		t.Fatal(err)
	}
	if m := <-retained; !m.Retain || string(m.Payload) != `{"online":false}` {
		t.Errorf("the retained will: %+v", m)
	}
	// The client connects again through the forwarder, and says so.
	<-connects
	select {
	case m := <-got:
		t.Errorf("a second will (the polite client's?): %+v", m)
	default:
	}
}
