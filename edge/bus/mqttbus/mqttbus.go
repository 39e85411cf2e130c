// Package mqttbus is a bus.Bus on any MQTT v5 broker, through
// github.com/eclipse/paho.golang (autopaho). It is for the parts of a gateway
// that talk to a broker: the local Mosquitto (package edge/broker) and
// upstream cloud brokers, usually through package edge/bus/bridge.
//
// # Connection
//
// New returns at once and connects in the background: a gateway must start
// while its uplink is down. The client reconnects with backoff, resubscribes
// on every connection, and keeps a persistent session (CleanStart false,
// SessionExpiry one hour) unless told otherwise. AwaitConnection waits for
// the link, and returns ErrUnauthorized at once when the broker refuses the
// credentials.
//
// # Publishing
//
// QoS 0 messages are written straight to the connection, and Publish returns
// bus.ErrNotConnected while the link is down.
//
// QoS 1 and 2 messages go through an on-disk outbound queue (QueueDir):
// Publish appends the message and, while connected, waits until the broker
// acknowledges it, returning the broker's refusal as bus.ErrRejected. While
// the link is down Publish returns as soon as the message is on disk; it is
// sent, in order, when the link comes back, also after a process restart
// (the queue reopens from disk). The queue is bounded by count and bytes and
// returns bus.ErrQueueFull when full, losing nothing it had accepted.
//
// A broker that crashes may lose messages it had already acknowledged. So
// the queue keeps the last ResendWindow acknowledged messages and sends them
// again after every reconnection: delivery is at least once, with duplicates
// after a link failure and never a gap. A clean Close while connected forgets
// the window.
//
// # Receiving
//
// Each Subscribe becomes an MQTT subscription with a subscription
// identifier, so a message is routed to exactly the subscriptions it was sent
// for. Local subscriptions to the same filter share one MQTT subscription (at
// the highest QoS asked for) and must agree on NoLocal and RetainAsPublished.
// Subscribe works while disconnected: the subscription is made when the link
// comes up. Delivery follows the package bus contract: a full QoS 1 buffer
// stops the routing of received messages, the broker holds the rest (its
// in-flight window), and acknowledgements for this client's own publishes
// keep arriving, so a handler may publish on the client that feeds it.
//
// A received QoS 1 or 2 message is acknowledged to the broker once it is in
// the buffers of its subscriptions, before the handlers run: a process crash
// loses what is buffered (up to SubscribeOptions.Buffer per subscription).
// Handlers that must not lose a message keep the buffer small.
//
// A Client is safe for concurrent use. Close disconnects, stops every
// subscription and closes the queue; it is safe to call twice.
package mqttbus

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/internal/dispatch"
	"github.com/edgekit/edgekit/internal/backoff"
	"github.com/edgekit/edgekit/internal/diskqueue"
)

// ErrUnauthorized means the broker refused the connection's credentials
// (CONNACK reason 0x86 or 0x87) or its TLS identity.
var ErrUnauthorized = errors.New("broker refused the credentials")

// Options configure a Client. Brokers is required; every other zero value
// means the default in its comment.
type Options struct {
	// Brokers are tried in turn: mqtt://, tcp://, mqtts://, tls://, ssl://,
	// ws:// or wss:// URLs.
	Brokers []string
	// ClientID names the session; default "edgekit-" and random hex. Set a
	// stable one for a persistent session across restarts.
	ClientID string
	// Username and Password authenticate the connection.
	Username, Password string
	// TLSConfig is used for mqtts, tls, ssl and wss URLs.
	TLSConfig *tls.Config
	// CleanStart discards the broker-side session at the first connection.
	CleanStart bool
	// SessionExpiry is how long the broker keeps the session after a
	// disconnect; default 1 h. A negative value keeps none. While the
	// broker keeps it, received QoS 1 and 2 messages are acknowledged only
	// once their handlers have returned (see the package bus delivery
	// contract); without one, on receipt.
	SessionExpiry time.Duration
	// KeepAlive is the MQTT keep-alive; default 30 s.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt; default 10 s.
	ConnectTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the reconnect backoff; default
	// 100 ms doubling to 30 s.
	ReconnectMin, ReconnectMax time.Duration
	// QueueDir holds the outbound queue. Default: a temporary directory
	// removed on Close (no store-and-forward across restarts).
	QueueDir string
	// QueueMaxMessages and QueueMaxBytes bound the messages waiting to be
	// sent; default 100,000 and 64 MiB.
	QueueMaxMessages int
	QueueMaxBytes    int64
	// QueueSync fsyncs every queued message: survives power loss, costs a
	// disk flush per message. Without it a process crash loses nothing.
	QueueSync bool
	// ResendWindow is how many acknowledged messages are sent again after a
	// reconnection; default 1,000; negative for none.
	ResendWindow int
	// MaxPacketSize is the largest packet the client takes from the
	// broker, sent in CONNECT (MQTT v5 3.1.2.11.4): the broker does not
	// send larger ones. Default DefaultMaxPacketSize.
	MaxPacketSize int
	// MaxPayload is the largest payload Publish accepts; default MQTT's
	// 268,435,455 bytes.
	MaxPayload int
	// Will, when set, is the message the broker publishes when the
	// connection ends without a DISCONNECT (a crash, a lost link): its
	// topic, payload, QoS, Retain and user properties (MQTT v5 3.1.2.5).
	// A gateway announces itself offline with it. paho.golang v0.23
	// packs will properties as CONNECT properties, which drops the
	// PUBLISH-only ones (content type, response topic, correlation data,
	// expiry: paho.golang#163), so only the user properties go with it.
	Will *bus.Message
	// OnConnect, when set, is called after each connection is up and its
	// subscriptions are renewed, on a goroutine of the client's (Close
	// waits for it): a gateway publishes its presence again there, since
	// the broker has published its Will after a lost link.
	OnConnect func()
	// Logger receives connection events and refusals; nil discards.
	Logger *slog.Logger
}

const mqttMaxPayload = 268435455

// DefaultMaxPacketSize bounds what a client takes from its broker unless
// told otherwise: a 6 MiB function response (Lambda's bound) fits.
const DefaultMaxPacketSize = 8 << 20

// Client is a bus.Bus on one MQTT connection.
type Client struct {
	// ackAfterHandler: the broker keeps the session, so received QoS 1
	// and 2 messages are acknowledged only when handled (onPublish).
	ackAfterHandler bool
	opts            Options
	log             *slog.Logger
	cm              *autopaho.ConnectionManager
	q               *diskqueue.Queue
	tempDir         string
	lifetime        context.Context // ends at Close; handed to autopaho
	stopLife        context.CancelFunc
	sendCtx         context.Context
	stopSend        context.CancelFunc
	sendDone        chan struct{}
	started         chan struct{}  // closed once New has set cm
	bg              sync.WaitGroup // resubscribe goroutines

	mu      sync.Mutex
	closed  bool
	entries map[string]*entry
	byID    map[int]subRef
	nextID  int
	subs    dispatch.Set // every subscription until its handler has returned

	conn    sync.Mutex
	up      bool
	upCh    chan struct{} // closed while connected
	downCh  chan struct{} // closed while disconnected
	authCh  chan struct{} // closed when the broker refused the credentials
	linkCtx context.Context
	linkEnd context.CancelFunc // ends linkCtx when the connection drops
	lastErr error
	rewind  bool
	// sendMu is held by whoever sends the queue's front record: the
	// sender goroutine, or a publisher sending its own record inline.
	sendMu   sync.Mutex
	kick     chan struct{} // wakes the sender for records left to it
	waitMu   sync.Mutex
	waiters  map[uint64]chan error
	received atomic.Uint64
	sent     atomic.Uint64
	rejected atomic.Uint64
	damaged  atomic.Uint64 // queued records that could not be read back

	// With ackAfterHandler: handling are the received QoS 1 and 2
	// messages whose handlers still run, owed those whose handlers have
	// returned and whose acknowledgements paho has yet to write; each
	// with the connection it came on and its place in the order of
	// arrival, in which paho writes acknowledgements (as MQTT asks), so
	// an owed one behind one still handling cannot go out yet.
	// ackChange is closed and made again at each change of either.
	ackMu     sync.Mutex
	handling  map[ackKey]uint64
	owed      map[uint16][]owedAck // by packet id (one per connection at most)
	ackSeq    uint64
	ackChange chan struct{}
}

// ackKey names a received message: packet ids are unique per connection.
type ackKey struct {
	conn *paho.Client
	id   uint16
}

type entry struct {
	filter  string // as subscribed, with any $share prefix
	inner   string
	shared  bool
	qos     bus.QoS
	noLocal bool
	rap     bool
	locals  []*local
	next    atomic.Uint64
	ids     []int // latest subscription identifiers, oldest first
}

type local struct {
	sub *dispatch.Sub
	qos bus.QoS
}

// subRef is what a subscription identifier stands for: the entry, and the
// local subscription whose SUBSCRIBE it was (nil after a resubscribe).
type subRef struct {
	e     *entry
	owner *local
}

var (
	_ bus.Bus           = (*Client)(nil)
	_ bus.QueueReporter = (*Client)(nil)
)

// New validates opts, opens the outbound queue and starts connecting in the
// background.
func New(opts *Options) (*Client, error) { return newClient(opts, sendAcksInterval) }

// sendAcksInterval is how often paho sends the acknowledgements due (see
// newClient).
const sendAcksInterval = 2 * time.Millisecond

// newClient is New with paho's acknowledgement interval (a test lengthens
// it to see what Close sends).
func newClient(opts *Options, ackInterval time.Duration) (*Client, error) {
	if opts == nil {
		return nil, errors.New("mqttbus: nil options (Brokers is required)")
	}
	o := *opts
	if len(o.Brokers) == 0 {
		return nil, errors.New("mqttbus: Options.Brokers is empty")
	}
	urls := make([]*url.URL, 0, len(o.Brokers))
	for i, b := range o.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("mqttbus: Options.Brokers[%d] %q is not a broker URL (want mqtt://host:port)", i, b)
		}
		switch u.Scheme {
		case "mqtt", "tcp", "mqtts", "tls", "ssl", "ws", "wss":
		default:
			return nil, fmt.Errorf("mqttbus: Options.Brokers[%d] %q: scheme %q (want mqtt, mqtts, tls, ssl, tcp, ws or wss)", i, b, u.Scheme)
		}
		urls = append(urls, u)
	}
	if o.ClientID == "" {
		var r [6]byte
		_, _ = rand.Read(r[:])
		o.ClientID = "edgekit-" + hex.EncodeToString(r[:])
	}
	if o.SessionExpiry == 0 {
		o.SessionExpiry = time.Hour
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.MaxPacketSize <= 0 || o.MaxPacketSize > mqttMaxPayload {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.MaxPayload <= 0 || o.MaxPayload > mqttMaxPayload {
		o.MaxPayload = mqttMaxPayload
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Client{
		opts:    o,
		log:     log.With("component", "mqttbus", "client_id", o.ClientID),
		entries: make(map[string]*entry),
		byID:    make(map[int]subRef),
		upCh:    make(chan struct{}),
		downCh:  make(chan struct{}),
		authCh:  make(chan struct{}),
		waiters: make(map[uint64]chan error),
		kick:    make(chan struct{}, 1),
		started: make(chan struct{}),
		nextID:  randomSubID(),
	}
	close(c.downCh)

	dir := o.QueueDir
	if dir == "" {
		d, err := os.MkdirTemp("", "edgekit-mqttbus-queue-")
		if err != nil {
			return nil, fmt.Errorf("mqttbus: temporary queue directory: %w", err)
		}
		dir, c.tempDir = d, d
	}
	q, err := diskqueue.Open(dir, diskqueue.Options{
		MaxRecords: o.QueueMaxMessages, MaxBytes: o.QueueMaxBytes, Sync: o.QueueSync, Window: o.ResendWindow,
	})
	if err != nil {
		c.removeTemp()
		return nil, fmt.Errorf("mqttbus: outbound queue: %w", err)
	}
	c.q = q
	for _, d := range q.Damage() {
		c.log.Error("outbound queue damaged: the messages it held are lost, the others kept", "queue", dir, "damage", d.String())
	}

	policy := backoff.Policy{Min: o.ReconnectMin, Max: o.ReconnectMax}
	if policy.Max <= 0 {
		policy.Max = 30 * time.Second
	}
	expiry := uint32(0)
	if o.SessionExpiry > 0 {
		expiry = uint32(min(o.SessionExpiry/time.Second, math.MaxUint32))
	}
	c.ackAfterHandler = o.SessionExpiry > 0
	cfg := autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        o.TLSConfig,
		KeepAlive:                     uint16(min(o.KeepAlive/time.Second, math.MaxUint16)),
		CleanStartOnInitialConnection: o.CleanStart,
		SessionExpiryInterval:         expiry,
		ReconnectBackoff:              policy.Delay,
		ConnectTimeout:                o.ConnectTimeout,
		ConnectUsername:               o.Username,
		ConnectPassword:               []byte(o.Password),
		OnConnectionUp:                c.onUp,
		OnConnectionDown:              c.onDown,
		OnConnectError:                c.onConnectError,
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			if w := o.Will; w != nil {
				cp.WillMessage = &paho.WillMessage{Topic: w.Topic, Payload: w.Payload, QoS: byte(w.QoS), Retain: w.Retain}
				cp.WillProperties = &paho.WillProperties{User: userProperties(w.UserProperties)}
			}
			size := uint32(o.MaxPacketSize)
			cp.Properties.MaximumPacketSize = &size
			return cp, nil
		},
		ClientConfig: paho.ClientConfig{
			ClientID:          o.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.onPublish},
			// With a session the broker keeps, a QoS 1 or 2 message is
			// acknowledged once every local subscription's handler has
			// returned for it (onPublish), so it survives a crash; without
			// one there is nothing to send again, and acknowledging on
			// receipt costs less. paho sends the acknowledgements due every
			// SendAcksInterval: its default of 50 ms put 48 ms into the p99
			// of message latency through Mosquitto; 2 ms costs 500 wake-ups
			// a second per connection and keeps that p99 within ~2 ms.
			EnableManualAcknowledgment: c.ackAfterHandler,
			SendAcksInterval:           ackInterval,
			// The session reports each acknowledgement it writes, so
			// that Close can wait for those due (awaitAcks).
			Session: &ackWatch{SessionManager: state.NewInMemory(), sent: c.ackSent},
		},
	}
	c.lifetime, c.stopLife = context.WithCancel(context.Background())
	c.sendCtx, c.stopSend = context.WithCancel(c.lifetime)
	cm, err := autopaho.NewConnection(c.lifetime, cfg)
	if err != nil {
		c.stopLife()
		_ = q.Close()
		c.removeTemp()
		return nil, fmt.Errorf("mqttbus: %w", err)
	}
	c.cm = cm
	close(c.started)
	c.sendDone = make(chan struct{})
	go c.sender()
	return c, nil
}

func randomSubID() int {
	// Subscription identifiers are 1..268,435,455. Starting at a random
	// point keeps a restarted client's identifiers apart from those of the
	// session the broker may still hold for it.
	n, _ := rand.Int(rand.Reader, big.NewInt(200_000_000))
	return int(n.Int64()) + 1
}

func (c *Client) removeTemp() {
	if c.tempDir != "" {
		_ = os.RemoveAll(c.tempDir)
	}
}

// ClientID returns the MQTT client identifier in use.
func (c *Client) ClientID() string { return c.opts.ClientID }

func (c *Client) onUp(cm *autopaho.ConnectionManager, ack *paho.Connack) {
	c.conn.Lock()
	c.up = true
	c.rewind = true
	c.lastErr = nil
	// In-flight publishes of this connection end with it rather than wait
	// out paho's packet timeout.
	c.linkCtx, c.linkEnd = context.WithCancel(c.sendCtx)
	close(c.upCh)
	c.downCh = make(chan struct{})
	c.conn.Unlock()
	c.log.Info("connected", "session_present", ack.SessionPresent)
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.bg.Add(1)
	}
	c.mu.Unlock()
	if !closed {
		go func() {
			defer c.bg.Done()
			c.resubscribe()
			if c.opts.OnConnect != nil {
				c.opts.OnConnect()
			}
		}()
	}
}

func (c *Client) onDown() bool {
	c.markDown()
	c.log.Warn("connection lost")
	// Waiting publishers are released: their messages are queued and will
	// be sent after the reconnection.
	c.releaseWaiters(nil)
	return true
}

// markDown records the link as down: lost (onDown), or closed by Close's
// disconnect, which autopaho does not report.
func (c *Client) markDown() {
	c.conn.Lock()
	defer c.conn.Unlock()
	if c.up {
		c.up = false
		c.linkEnd()
		close(c.downCh)
		c.upCh = make(chan struct{})
	}
}

func (c *Client) onConnectError(err error) {
	var ce *autopaho.ConnackError
	auth := errors.As(err, &ce) && (ce.ReasonCode == 0x86 || ce.ReasonCode == 0x87 || ce.ReasonCode == 0x8C)
	if auth {
		err = fmt.Errorf("mqttbus: %w: CONNACK reason 0x%02x (%s) %s", ErrUnauthorized, ce.ReasonCode, reasonName(ce.ReasonCode), ce.Reason)
	} else {
		err = fmt.Errorf("mqttbus: connecting: %w", err)
	}
	c.conn.Lock()
	c.lastErr = err
	if auth {
		select {
		case <-c.authCh:
		default:
			close(c.authCh)
		}
	}
	c.conn.Unlock()
	c.log.Warn("connection attempt failed", "err", err)
}

// Connected reports whether the link to the broker is up.
func (c *Client) Connected() bool {
	c.conn.Lock()
	defer c.conn.Unlock()
	return c.up
}

// AwaitConnection waits until the link is up. It returns ErrUnauthorized
// when the broker refuses the credentials, and ctx's error joined with the
// last connection error when ctx ends first.
func (c *Client) AwaitConnection(ctx context.Context) error {
	c.conn.Lock()
	up, auth := c.upCh, c.authCh
	c.conn.Unlock()
	select {
	case <-up:
		return nil
	case <-auth:
		c.conn.Lock()
		defer c.conn.Unlock()
		if c.up {
			return nil
		}
		return c.lastErr
	case <-ctx.Done():
		c.conn.Lock()
		defer c.conn.Unlock()
		return errors.Join(fmt.Errorf("mqttbus: waiting for a connection: %w", ctx.Err()), c.lastErr)
	}
}

func (c *Client) connState() (up bool, upCh, downCh chan struct{}) {
	c.conn.Lock()
	defer c.conn.Unlock()
	return c.up, c.upCh, c.downCh
}

// Publish sends msg; see the package doc for what it waits for at each QoS.
func (c *Client) Publish(ctx context.Context, msg *bus.Message) error {
	if err := msg.Validate(); err != nil {
		return fmt.Errorf("mqttbus: publish: %w", err)
	}
	if len(msg.Payload) > c.opts.MaxPayload {
		return fmt.Errorf("mqttbus: publish %q: %w: %d bytes, limit %d", msg.Topic, bus.ErrPayloadTooLarge, len(msg.Payload), c.opts.MaxPayload)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("mqttbus: publish %q: %w", msg.Topic, bus.ErrClosed)
	}
	if msg.QoS == bus.AtMostOnce {
		if up, _, _ := c.connState(); !up {
			return fmt.Errorf("mqttbus: publish %q: %w", msg.Topic, bus.ErrNotConnected)
		}
		if _, err := c.cm.Publish(ctx, toPaho(msg)); err != nil {
			if errors.Is(err, autopaho.ConnectionDownError) {
				return fmt.Errorf("mqttbus: publish %q: %w", msg.Topic, bus.ErrNotConnected)
			}
			return fmt.Errorf("mqttbus: publish %q: %w", msg.Topic, err)
		}
		c.sent.Add(1)
		return nil
	}

	rec := encodeMessage(msg, time.Now())
	ch := make(chan error, 1)
	c.waitMu.Lock()
	id, err := c.q.Append(rec)
	if err == nil {
		c.waiters[id] = ch
	}
	c.waitMu.Unlock()
	switch {
	case errors.Is(err, diskqueue.ErrFull), errors.Is(err, diskqueue.ErrTooBig):
		return fmt.Errorf("mqttbus: publish %q: %w: %w", msg.Topic, bus.ErrQueueFull, err)
	case errors.Is(err, diskqueue.ErrClosed):
		return fmt.Errorf("mqttbus: publish %q: %w", msg.Topic, bus.ErrClosed)
	case err != nil:
		return fmt.Errorf("mqttbus: publish %q: queueing: %w", msg.Topic, err)
	}
	if up, _, _ := c.connState(); !up {
		c.dropWaiter(id)
		c.wakeSender()
		return nil // queued; sent when the link is back
	}
	// Fast path: when nothing is being sent and this record is at the
	// front, send it from this goroutine rather than hand it over.
	if c.sendMu.TryLock() {
		err, sent := c.sendInline(id, msg)
		c.sendMu.Unlock()
		if sent {
			c.dropWaiter(id)
			return err
		}
	}
	c.wakeSender()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		c.dropWaiter(id)
		return fmt.Errorf("mqttbus: publish %q: waiting for the acknowledgement (the message stays queued): %w", msg.Topic, ctx.Err())
	}
}

func (c *Client) wakeSender() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Client) dropWaiter(id uint64) {
	c.waitMu.Lock()
	delete(c.waiters, id)
	c.waitMu.Unlock()
}

func (c *Client) notify(id uint64, err error) {
	c.waitMu.Lock()
	ch, ok := c.waiters[id]
	delete(c.waiters, id)
	c.waitMu.Unlock()
	if ok {
		ch <- err
	}
}

func (c *Client) releaseWaiters(err error) {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	for id, ch := range c.waiters {
		ch <- err
		delete(c.waiters, id)
	}
}

// sendInline sends the front record if it is id, using msg rather than
// reading it back. sent is false when id is not at the front. c.sendMu is
// held.
func (c *Client) sendInline(id uint64, msg *bus.Message) (err error, sent bool) {
	if front, ferr := c.q.FrontID(); ferr != nil || front != id {
		return nil, false
	}
	c.conn.Lock()
	up, rewind, linkCtx := c.up, c.rewind, c.linkCtx
	c.conn.Unlock()
	if !up || rewind {
		return nil, false // the sender has a rewind to do first
	}
	outcome, err := c.sendFront(linkCtx, msg)
	if outcome == linkFailed {
		return nil, true // still queued; the sender retries after reconnecting
	}
	return err, true
}

type sendOutcome int

const (
	acked sendOutcome = iota
	refused
	retryLater
	linkFailed
)

// sendFront publishes m, the queue's front record, and acks or drops it by
// the broker's answer. c.sendMu is held.
func (c *Client) sendFront(ctx context.Context, m *bus.Message) (sendOutcome, error) {
	resp, err := c.cm.Publish(ctx, toPaho(m))
	switch {
	case err == nil:
		_ = c.q.Ack()
		c.sent.Add(1)
		return acked, nil
	case errors.Is(err, paho.ErrInvalidArguments):
		// The broker's CONNACK ruled it out (QoS above its maximum,
		// retain unavailable): sending again cannot help.
		c.rejected.Add(1)
		rerr := fmt.Errorf("mqttbus: publish %q: %w: %w", m.Topic, bus.ErrRejected, err)
		c.log.Error("message not allowed by the broker; dropped", "err", rerr)
		_ = c.q.Drop()
		return refused, rerr
	case resp != nil && resp.ReasonCode >= 0x80:
		rerr := fmt.Errorf("mqttbus: publish %q: %w: reason 0x%02x (%s) %s", m.Topic, bus.ErrRejected, resp.ReasonCode, reasonName(resp.ReasonCode), reasonString(resp))
		if resp.ReasonCode == 0x97 { // quota exceeded: try again later
			c.log.Warn("broker quota exceeded; retrying", "topic", m.Topic)
			return retryLater, rerr
		}
		c.rejected.Add(1)
		c.log.Error("broker refused a message; dropped", "err", rerr)
		_ = c.q.Drop()
		return refused, rerr
	default:
		return linkFailed, err
	}
}

// sender moves the outbound queue to the broker, one message at a time, in
// order.
func (c *Client) sender() {
	defer close(c.sendDone)
	for {
		up, upCh, downCh := c.connState()
		if !up {
			select {
			case <-upCh:
				continue
			case <-c.sendCtx.Done():
				return
			}
		}
		c.sendMu.Lock()
		wait, stop := c.sendOne()
		c.sendMu.Unlock()
		if stop {
			return
		}
		if wait != nil {
			select {
			case <-wait:
			case <-downCh:
			case <-c.sendCtx.Done():
				return
			}
		}
	}
}

// sendOne sends the queue's front record. It returns a channel to wait on
// when the queue is empty, and stop when the sender must end. c.sendMu is
// held.
func (c *Client) sendOne() (wait <-chan struct{}, stop bool) {
	c.conn.Lock()
	rewind, linkCtx := c.rewind, c.linkCtx
	c.rewind = false
	c.conn.Unlock()
	if rewind {
		if err := c.q.Rewind(); err != nil {
			c.log.Error("rewinding the outbound queue", "err", err)
		}
	}
	id, rec, err := c.q.Front()
	switch {
	case errors.Is(err, diskqueue.ErrEmpty):
		return c.kick, false
	case errors.Is(err, diskqueue.ErrClosed):
		return nil, true
	}
	var m *bus.Message
	expired := false
	if err == nil {
		m, expired, err = decodeMessage(rec, time.Now())
	}
	if err != nil || expired {
		if expired {
			err = fmt.Errorf("message on %q expired in the outbound queue", m.Topic)
		}
		c.log.Error("dropping a queued message", "err", err)
		if !expired {
			c.damaged.Add(1)
		}
		_ = c.q.Drop()
		c.notify(id, fmt.Errorf("mqttbus: %w", err))
		return nil, false
	}
	outcome, err := c.sendFront(linkCtx, m)
	switch outcome {
	case acked, refused:
		c.notify(id, err)
	case retryLater:
		c.pause(time.Second)
	case linkFailed:
		if c.sendCtx.Err() != nil {
			return nil, true
		}
		// The link failed under us: the record stays at the front and
		// goes again after the reconnection.
		c.pause(50 * time.Millisecond)
	}
	return nil, false
}

func (c *Client) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.sendCtx.Done():
	}
}

func toPaho(m *bus.Message) *paho.Publish {
	p := &paho.Publish{Topic: m.Topic, QoS: byte(m.QoS), Retain: m.Retain, Payload: m.Payload}
	if m.ContentType == "" && m.ResponseTopic == "" && m.CorrelationData == nil && m.MessageExpiry == 0 && len(m.UserProperties) == 0 {
		return p // no properties: spare paho two allocations
	}
	p.Properties = &paho.PublishProperties{
		ContentType:     m.ContentType,
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
	}
	if m.MessageExpiry > 0 {
		secs := uint32(min((m.MessageExpiry+time.Second-1)/time.Second, math.MaxUint32))
		p.Properties.MessageExpiry = &secs
	}
	p.Properties.User = userProperties(m.UserProperties)
	return p
}

func userProperties(ps []bus.UserProperty) paho.UserProperties {
	var out paho.UserProperties
	for _, u := range ps {
		out = append(out, paho.UserProperty{Key: u.Key, Value: u.Value})
	}
	return out
}

func fromPaho(p *paho.Publish) *bus.Message {
	m := &bus.Message{Topic: p.Topic, Payload: p.Payload, QoS: bus.QoS(p.QoS), Retain: p.Retain}
	if pp := p.Properties; pp != nil {
		m.ContentType, m.ResponseTopic, m.CorrelationData = pp.ContentType, pp.ResponseTopic, pp.CorrelationData
		if pp.MessageExpiry != nil {
			m.MessageExpiry = time.Duration(*pp.MessageExpiry) * time.Second
		}
		if len(pp.User) > 0 {
			m.UserProperties = make([]bus.UserProperty, len(pp.User))
			for i, u := range pp.User {
				m.UserProperties[i] = bus.UserProperty{Key: u.Key, Value: u.Value}
			}
		}
	}
	return m
}

// reasonName names the MQTT v5 reason codes a client meets most.
func reasonName(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x83:
		return "implementation specific error"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x8C:
		return "bad authentication method"
	case 0x90:
		return "topic name invalid"
	case 0x95:
		return "packet too large"
	case 0x97:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	default:
		return "reason code"
	}
}

func reasonString(r *paho.PublishResponse) string {
	if r.Properties == nil {
		return ""
	}
	return r.Properties.ReasonString
}
