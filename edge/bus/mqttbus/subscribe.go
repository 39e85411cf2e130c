package mqttbus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/internal/dispatch"
	"github.com/edgekit/edgekit/internal/drain"
)

// Subscribe registers h for filter. While connected it returns after the
// broker granted the subscription (bus.ErrRejected when it refused); while
// disconnected it returns at once and subscribes when the link comes up.
func (c *Client) Subscribe(ctx context.Context, filter string, h bus.Handler, opts *bus.SubscribeOptions) (bus.Subscription, error) {
	req, err := bus.CheckSubscribe(filter, h, opts)
	if err != nil {
		return nil, fmt.Errorf("mqttbus: %w", err)
	}
	o, inner, shared := req.Options, req.Inner, req.Shared()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("mqttbus: subscribe %q: %w", filter, bus.ErrClosed)
	}
	e := c.entries[filter]
	if e != nil && (e.noLocal != o.NoLocal || e.rap != o.RetainAsPublished) {
		c.mu.Unlock()
		return nil, fmt.Errorf("mqttbus: subscribe %q: already subscribed on this client with NoLocal=%v RetainAsPublished=%v; a second subscription must use the same", filter, e.noLocal, e.rap)
	}
	if e == nil {
		e = &entry{filter: filter, inner: inner, shared: shared, noLocal: o.NoLocal, rap: o.RetainAsPublished}
		c.entries[filter] = e
	}
	l := &local{qos: o.QoS}
	l.sub = c.subs.Start(dispatch.Spec{Filter: filter, Handler: h, Buffer: o.Buffer, Log: c.log, Remove: func(ctx context.Context) error {
		return c.unsubscribe(ctx, e, l)
	}})
	e.locals = append(e.locals, l)
	e.qos = max(e.qos, o.QoS)
	id := c.newIDLocked(e, l)
	packet := subscribePacket(e, id, 0)
	c.mu.Unlock()

	if up, _, _ := c.connState(); !up {
		return l.sub, nil
	}
	if err := c.sendSubscribe(ctx, packet); err != nil {
		if errors.Is(err, bus.ErrRejected) {
			l.sub.Stop()
			_ = c.unsubscribe(ctx, e, l)
			return nil, fmt.Errorf("mqttbus: subscribe %q: %w", filter, err)
		}
		// The link failed: the subscription is made again on reconnection.
		c.log.Warn("subscribe deferred to the next connection", "filter", filter, "err", err)
	}
	return l.sub, nil
}

// idsPerEntry is how many of a filter's latest subscription identifiers
// are remembered: messages already on their way under an older SUBSCRIBE
// still find their subscription, and the table stays bounded however often
// the link drops.
const idsPerEntry = 4

// newIDLocked assigns a fresh subscription identifier to e; c.mu is held.
func (c *Client) newIDLocked(e *entry, owner *local) int {
	id := c.nextID
	c.nextID++
	if c.nextID > 268_435_455 {
		c.nextID = 1
	}
	c.byID[id] = subRef{e: e, owner: owner}
	e.ids = append(e.ids, id)
	if over := len(e.ids) - idsPerEntry; over > 0 {
		for _, old := range e.ids[:over] {
			delete(c.byID, old)
		}
		e.ids = e.ids[over:]
	}
	return id
}

func subscribePacket(e *entry, id int, retainHandling byte) *paho.Subscribe {
	return &paho.Subscribe{
		Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		Subscriptions: []paho.SubscribeOptions{{
			Topic: e.filter, QoS: byte(e.qos), NoLocal: e.noLocal, RetainAsPublished: e.rap, RetainHandling: retainHandling,
		}},
	}
}

func (c *Client) sendSubscribe(ctx context.Context, req *paho.Subscribe) error {
	ack, err := c.cm.Subscribe(ctx, req)
	// paho returns the SUBACK with an error when the broker refused.
	if ack != nil && len(ack.Reasons) > 0 && ack.Reasons[0] >= 0x80 {
		return fmt.Errorf("%w: SUBACK reason 0x%02x (%s)", bus.ErrRejected, ack.Reasons[0], reasonName(ack.Reasons[0]))
	}
	return err
}

// resubscribe makes every subscription again after a connection came up.
// Retain handling 1 asks for retained messages only where the broker had
// lost the subscription.
func (c *Client) resubscribe() {
	// autopaho may report the connection before New has stored c.cm.
	select {
	case <-c.started:
	case <-c.lifetime.Done():
		return
	}
	c.mu.Lock()
	var reqs []*paho.Subscribe
	for _, e := range c.entries {
		reqs = append(reqs, subscribePacket(e, c.newIDLocked(e, nil), 1))
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if err := c.sendSubscribe(c.lifetime, r); err != nil {
			c.log.Warn("resubscribe failed", "filter", r.Subscriptions[0].Topic, "err", err)
		}
	}
}

func (c *Client) unsubscribe(ctx context.Context, e *entry, l *local) error {
	c.mu.Lock()
	i := slices.Index(e.locals, l)
	if i < 0 {
		c.mu.Unlock()
		return nil
	}
	e.locals = slices.Delete(slices.Clone(e.locals), i, i+1)
	last := len(e.locals) == 0 && c.entries[e.filter] == e
	if last {
		delete(c.entries, e.filter)
		for _, id := range e.ids {
			delete(c.byID, id)
		}
	}
	closed := c.closed
	c.mu.Unlock()
	if !last || closed {
		return nil
	}
	if up, _, _ := c.connState(); !up {
		return nil
	}
	if _, err := c.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{e.filter}}); err != nil && !errors.Is(err, autopaho.ConnectionDownError) {
		return fmt.Errorf("mqttbus: unsubscribe %q: %w", e.filter, err)
	}
	return nil
}

// onPublish routes an incoming message to local subscriptions. It runs on
// paho's receive goroutine and blocks while a QoS 1 buffer is full. With a
// session the broker keeps, a QoS 1 or 2 message is acknowledged to the
// broker when every subscription it went to has handled it (or let it go
// by unsubscribing): a gateway that stops before then gets it again from
// the broker in its next session. paho sends acknowledgements in the order
// the messages came, as MQTT asks.
func (c *Client) onPublish(pr paho.PublishReceived) (bool, error) {
	c.received.Add(1)
	m := fromPaho(pr.Packet)
	locals := c.route(pr.Packet, m)
	var done func()
	if pr.Packet.QoS > 0 && c.ackAfterHandler {
		c.handlingStarts(pr)
		if len(locals) == 0 {
			c.ack(pr)
		} else {
			var remaining atomic.Int32
			remaining.Store(int32(len(locals)))
			done = func() {
				if remaining.Add(-1) == 0 {
					c.ack(pr)
				}
			}
		}
	}
	for _, l := range locals {
		d := m
		if q := min(m.QoS, l.qos); q != m.QoS {
			d = m.ShallowCopy()
			d.QoS = q
		}
		_ = l.sub.DeliverThen(c.lifetime, d, done)
	}
	return true, nil
}

// handlingStarts records a received message whose acknowledgement
// waits for its handlers.
func (c *Client) handlingStarts(pr paho.PublishReceived) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if c.handling == nil {
		c.handling, c.owed = map[ackKey]uint64{}, map[uint16][]owedAck{}
	}
	c.ackSeq++
	c.handling[ackKey{pr.Client, pr.Packet.PacketID}] = c.ackSeq
	c.ackChangedLocked()
}

// ack acknowledges a received message, unless its connection has gone:
// then the broker sends it again on the next one.
func (c *Client) ack(pr paho.PublishReceived) {
	k := ackKey{pr.Client, pr.Packet.PacketID}
	c.ackMu.Lock()
	seq, ok := c.handling[k]
	delete(c.handling, k)
	select {
	case <-pr.Client.Done():
		ok = false
	default:
	}
	if ok {
		c.owed[k.id] = append(c.owed[k.id], owedAck{conn: k.conn, seq: seq})
	}
	c.ackChangedLocked()
	c.ackMu.Unlock()
	if !ok {
		return
	}
	if err := pr.Client.Ack(pr.Packet); err != nil {
		c.log.Debug("acknowledging a message", "topic", pr.Packet.Topic, "err", err)
		c.ackSent(k.id)
	}
}

// ackSent is told of each acknowledgement the session writes, by packet
// id. The session writes on the live connection, so it is the oldest
// owed one with that id on a connection not gone; those owed on
// connections gone are dropped (the broker sends their messages again).
func (c *Client) ackSent(id uint16) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	es := slices.DeleteFunc(c.owed[id], owedAck.gone)
	if len(es) > 0 {
		es = es[1:] // appended in arrival order: the oldest first
	}
	if len(es) == 0 {
		delete(c.owed, id)
	} else {
		c.owed[id] = es
	}
	c.ackChangedLocked()
}

// owedAck is a handled message whose acknowledgement paho has yet to
// write: its connection and its place in the order of arrival.
type owedAck struct {
	conn *paho.Client
	seq  uint64
}

func (e owedAck) gone() bool {
	select {
	case <-e.conn.Done():
		return true
	default:
		return false
	}
}

// ackStall is how long Close waits for an acknowledgement to be written
// when none is: paho writes them every few milliseconds, so a stall this
// long means it will not (the broker then sends the message again).
const ackStall = 5 * time.Second

func (c *Client) ackChangedLocked() {
	if c.ackChange != nil {
		close(c.ackChange)
		c.ackChange = nil
	}
}

// awaitAcks waits until paho has written every acknowledgement it can:
// of each message whose handlers have returned and that came after no
// message still being handled (MQTT acknowledges in the order messages
// came; the broker sends a message whose acknowledgement stays behind
// again in the next session). It returns early when the connection drops
// (the broker then sends those messages again), and ctx's error when ctx
// ends. paho writes them on a ticker; without the wait a message handled
// just before Close would come again in the next session.
func (c *Client) awaitAcks(ctx context.Context) error {
	stall := time.NewTimer(ackStall)
	defer stall.Stop()
	for {
		_, _, down := c.connState()
		c.ackMu.Lock()
		// Nothing is waited for on a connection gone.
		maps.DeleteFunc(c.handling, func(k ackKey, _ uint64) bool { return owedAck{conn: k.conn}.gone() })
		sendable, held := 0, 0
		for id, es := range c.owed {
			if es = slices.DeleteFunc(es, owedAck.gone); len(es) == 0 {
				delete(c.owed, id)
				continue
			}
			c.owed[id] = es
			for _, e := range es {
				behind := false
				for h, hseq := range c.handling {
					if h.conn == e.conn && hseq < e.seq {
						behind = true
						break
					}
				}
				if behind {
					held++
				} else {
					sendable++
				}
			}
		}
		if sendable == 0 {
			c.ackMu.Unlock()
			if held > 0 {
				c.log.Info("mqttbus: close: acknowledgements held back behind messages still being handled; the broker sends those again", "held", held)
			}
			return nil
		}
		if c.ackChange == nil {
			c.ackChange = make(chan struct{})
		}
		changed := c.ackChange
		c.ackMu.Unlock()
		select {
		case <-changed:
			stall.Reset(ackStall)
		case <-down:
			return nil
		case <-stall.C:
			c.log.Warn("mqttbus: close: acknowledgements not written for a while; the broker sends those messages again", "owed", sendable)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("mqttbus: close: waiting for acknowledgements to be sent: %w", ctx.Err())
		}
	}
}

// ackWatch is the client's session state, which tells the client of each
// acknowledgement it writes.
type ackWatch struct {
	session.SessionManager
	sent func(id uint16)
}

func (w *ackWatch) Ack(pb *packets.Publish) error {
	err := w.SessionManager.Ack(pb)
	w.sent(pb.PacketID)
	return err
}

func (c *Client) route(p *paho.Publish, m *bus.Message) []*local {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.Properties != nil && p.Properties.SubscriptionIdentifier != nil {
		ref, ok := c.byID[*p.Properties.SubscriptionIdentifier]
		if ok && bus.Match(ref.e.inner, m.Topic) {
			return pick(ref, m, nil)
		}
	}
	// No (known) identifier: match every entry.
	var out []*local
	for _, e := range c.entries {
		if bus.Match(e.inner, m.Topic) {
			out = pick(subRef{e: e}, m, out)
		}
	}
	return out
}

// pick appends the local subscriptions of ref.e that get m.
func pick(ref subRef, m *bus.Message, out []*local) []*local {
	e := ref.e
	if len(e.locals) == 0 {
		return out
	}
	if e.shared {
		return append(out, e.locals[int(e.next.Add(1)-1)%len(e.locals)])
	}
	// A retained message sent in answer to one local subscription's
	// SUBSCRIBE is for that subscription only.
	if m.Retain && !e.rap && ref.owner != nil {
		if slices.Contains(e.locals, ref.owner) {
			return append(out, ref.owner)
		}
		return out
	}
	return append(out, e.locals...)
}

// Stats are a client's counters.
type Stats struct {
	Connected bool
	Sent      uint64 // messages the broker acknowledged (QoS 0: written)
	Received  uint64
	Rejected  uint64 // refused by the broker and dropped
	Queue     bus.QueueStats
	LastError error // the last connection error, nil while connected
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.conn.Lock()
	up, lastErr := c.up, c.lastErr
	c.conn.Unlock()
	return Stats{Connected: up, Sent: c.sent.Load(), Received: c.received.Load(), Rejected: c.rejected.Load(), Queue: c.QueueStats(), LastError: lastErr}
}

// QueueStats reports the outbound queue.
func (c *Client) QueueStats() bus.QueueStats {
	s := c.q.Stats()
	return bus.QueueStats{Messages: s.Pending, Bytes: s.PendingBytes, Dropped: c.rejected.Load(), Damaged: uint64(s.Damaged) + c.damaged.Load()}
}

// Close stops sending, sends the acknowledgements of received messages
// whose handlers have returned, disconnects from the broker, stops every subscription
// (waiting for running handlers) and closes the queue; messages still queued
// stay on disk for the next New with the same QueueDir. It is safe to call
// more than once.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	var errs []error
	c.stopSend()
	select {
	case <-c.sendDone:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("mqttbus: close: waiting for the sender: %w", ctx.Err()))
	}
	wasUp := c.Connected()
	if c.ackAfterHandler && wasUp {
		if err := c.awaitAcks(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.cm.Disconnect(ctx); err != nil {
		errs = append(errs, fmt.Errorf("mqttbus: close: disconnect: %w", err))
	}
	c.markDown()
	c.stopLife()
	if err := drain.Wait(ctx, &c.bg, c.stopLife); err != nil {
		errs = append(errs, fmt.Errorf("mqttbus: close: resubscriptions: %w", err))
	}
	c.releaseWaiters(nil)
	if err := c.subs.Stop(ctx, nil); err != nil {
		errs = append(errs, fmt.Errorf("mqttbus: close: %w", err))
	}
	if wasUp {
		_ = c.q.ForgetWindow()
	}
	if err := c.q.Close(); err != nil {
		errs = append(errs, fmt.Errorf("mqttbus: close: queue: %w", err))
	}
	c.removeTemp()
	return errors.Join(errs...)
}
