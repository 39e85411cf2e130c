// Package mqttlite is a minimal MQTT v5 client for simulations of many
// clients in one process (the fleet's 10,000 simulated gateways): one TCP
// connection and one goroutine each, a clean session, no keep-alive, no
// reconnection, no queue. Publish returns once the packet is written (a
// QoS 1 PUBACK is read and not waited for); a subscription's handler runs
// on the connection's goroutine, and an incoming QoS 1 message is
// acknowledged once it returns. It implements the parts of bus.Bus a
// simulated gateway uses; anything else is edge/bus/mqttbus's job.
package mqttlite

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
)

// Client is one connection.
type Client struct {
	conn net.Conn
	w    *bufio.Writer
	wmu  sync.Mutex
	ids  atomic.Uint32

	mu      sync.Mutex
	subs    map[string]bus.Handler // filter → handler
	waiting map[uint16]chan byte   // SUBACK, UNSUBACK by packet id
	err     error
	done    chan struct{}
}

// Dial connects to the broker at addr (host:port) as clientID.
func Dial(ctx context.Context, addr, clientID string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, w: bufio.NewWriterSize(conn, 512), subs: map[string]bus.Handler{}, waiting: map[uint16]chan byte{}, done: make(chan struct{})}
	// CONNECT: "MQTT", version 5, clean start, no keep-alive, no
	// properties; the client id.
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 5, 0x02, 0, 0, 0)
	vh = appendString(vh, clientID)
	if err := c.write(0x10, vh); err != nil {
		conn.Close()
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	r := bufio.NewReaderSize(conn, 1024)
	typ, body, err := readPacket(r)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("mqttlite: %s: CONNACK: %w", clientID, err)
	}
	if typ>>4 != 2 || len(body) < 2 || body[1] != 0 {
		conn.Close()
		return nil, fmt.Errorf("mqttlite: %s: refused (packet %#x, %v)", clientID, typ, body)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go c.read(r)
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func (c *Client) write(first byte, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	hdr := appendVarint([]byte{first}, len(body))
	if _, err := c.w.Write(hdr); err != nil {
		return err
	}
	if _, err := c.w.Write(body); err != nil {
		return err
	}
	return c.w.Flush()
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if mult *= 128; i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// varint reads a variable byte integer at b[i:].
func varint(b []byte, i int) (n, next int, ok bool) {
	mult := 1
	for j := 0; j < 4 && i < len(b); j++ {
		n += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return n, i + 1, true
		}
		mult *= 128
		i++
	}
	return 0, 0, false
}

func (c *Client) read(r *bufio.Reader) {
	defer close(c.done)
	for {
		typ, body, err := readPacket(r)
		if err != nil {
			c.mu.Lock()
			c.err = err
			for id, ch := range c.waiting {
				close(ch)
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			return
		}
		switch typ >> 4 {
		case 3: // PUBLISH
			c.publish(typ, body)
		case 9, 11: // SUBACK, UNSUBACK
			if len(body) >= 2 {
				id := binary.BigEndian.Uint16(body)
				reason := byte(0)
				if _, i, ok := varint(body, 2); ok && i < len(body) {
					reason = body[i]
				}
				c.mu.Lock()
				if ch, ok := c.waiting[id]; ok {
					ch <- reason
					delete(c.waiting, id)
				}
				c.mu.Unlock()
			}
		}
	}
}

func (c *Client) publish(typ byte, body []byte) {
	qos := typ >> 1 & 3
	if len(body) < 2 {
		return
	}
	tl := int(binary.BigEndian.Uint16(body))
	if 2+tl > len(body) {
		return
	}
	topic := string(body[2 : 2+tl])
	i := 2 + tl
	var id uint16
	if qos > 0 {
		if i+2 > len(body) {
			return
		}
		id = binary.BigEndian.Uint16(body[i:])
		i += 2
	}
	plen, i, ok := varint(body, i)
	if !ok || i+plen > len(body) {
		return
	}
	msg := &bus.Message{Topic: topic, Payload: body[i+plen:], QoS: bus.QoS(qos), Retain: typ&1 == 1}
	c.mu.Lock()
	var hs []bus.Handler
	for f, h := range c.subs {
		if bus.Match(f, topic) {
			hs = append(hs, h)
		}
	}
	c.mu.Unlock()
	for _, h := range hs {
		h(context.Background(), msg)
	}
	if qos == 1 {
		_ = c.write(0x40, binary.BigEndian.AppendUint16(nil, id))
	}
}

func (c *Client) nextID() uint16 {
	for {
		if id := uint16(c.ids.Add(1)); id != 0 {
			return id
		}
	}
}

// Publish writes msg (QoS 0 or 1).
func (c *Client) Publish(ctx context.Context, msg *bus.Message) error {
	first := byte(0x30)
	if msg.Retain {
		first |= 1
	}
	body := appendString(make([]byte, 0, 2+len(msg.Topic)+3+len(msg.Payload)), msg.Topic)
	if msg.QoS > 0 {
		first |= 1 << 1
		body = binary.BigEndian.AppendUint16(body, c.nextID())
	}
	body = append(body, 0) // no properties
	body = append(body, msg.Payload...)
	return c.write(first, body)
}

// Subscribe subscribes to filter at QoS 1 (options other than QoS are
// not supported) and waits for the SUBACK.
func (c *Client) Subscribe(ctx context.Context, filter string, h bus.Handler, opts *bus.SubscribeOptions) (bus.Subscription, error) {
	qos := byte(1)
	if opts != nil {
		qos = byte(opts.QoS)
	}
	if err := c.request(ctx, 0x82, filter, []byte{qos}, func() { c.subs[filter] = h }); err != nil {
		return nil, fmt.Errorf("mqttlite: subscribe %s: %w", filter, err)
	}
	return &subscription{c: c, filter: filter}, nil
}

func (c *Client) request(ctx context.Context, first byte, filter string, tail []byte, before func()) error {
	id := c.nextID()
	ch := make(chan byte, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	before()
	c.waiting[id] = ch
	c.mu.Unlock()
	body := binary.BigEndian.AppendUint16(nil, id)
	body = append(body, 0)
	body = append(appendString(body, filter), tail...)
	if err := c.write(first, body); err != nil {
		return err
	}
	select {
	case reason, ok := <-ch:
		if !ok {
			return errors.New("connection closed")
		}
		if reason >= 0x80 {
			return fmt.Errorf("refused (reason %#x)", reason)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type subscription struct {
	c      *Client
	filter string
}

func (s *subscription) Filter() string  { return s.filter }
func (s *subscription) Dropped() uint64 { return 0 }
func (s *subscription) Unsubscribe(ctx context.Context) error {
	return s.c.request(ctx, 0xA2, s.filter, nil, func() { delete(s.c.subs, s.filter) })
}

// Done is closed when the connection has ended (closed, or lost).
func (c *Client) Done() <-chan struct{} { return c.done }

// Close disconnects.
func (c *Client) Close(ctx context.Context) error {
	_ = c.write(0xE0, nil)
	err := c.conn.Close()
	<-c.done
	return err
}
