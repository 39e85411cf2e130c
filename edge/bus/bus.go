package bus

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Implementations wrap them with %w and name the topic,
// filter or limit concerned.
var (
	// ErrClosed is returned by Publish and Subscribe after Close.
	ErrClosed = errors.New("bus closed")
	// ErrInvalidTopic means a topic name breaks MQTT v5 section 4.7.
	ErrInvalidTopic = errors.New("invalid topic name")
	// ErrInvalidFilter means a topic filter breaks MQTT v5 section 4.7.
	ErrInvalidFilter = errors.New("invalid topic filter")
	// ErrInvalidQoS means a QoS other than 0, 1 or 2.
	ErrInvalidQoS = errors.New("invalid QoS")
	// ErrInvalidMessage means a message field other than the topic or QoS
	// is wrong.
	ErrInvalidMessage = errors.New("invalid message")
	// ErrPayloadTooLarge means a payload over the bus's configured maximum.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrQueueFull means an outbound queue has reached its size or count
	// bound; the message was not accepted.
	ErrQueueFull = errors.New("outbound queue full")
	// ErrNotConnected means a QoS 0 message could not be sent because the
	// link to the broker is down (QoS 1 and 2 messages are queued instead).
	ErrNotConnected = errors.New("not connected to broker")
	// ErrRejected means the broker refused a message or a subscription, for
	// example because an ACL denies it.
	ErrRejected = errors.New("rejected by broker")
)

// Handler receives the messages of one subscription, one at a time. ctx ends
// when the subscription is removed or the bus closes. See the package doc
// for what a handler may do.
type Handler func(ctx context.Context, msg *Message)

// Bus publishes messages and delivers them to subscriptions. All methods are
// safe for concurrent use.
type Bus interface {
	// Publish sends msg to every matching subscription. What "sent" means
	// for each QoS is the implementation's to document (an MQTT bus waits
	// for the broker's acknowledgement, or queues when offline). The bus
	// keeps msg's slices; the caller must not modify them afterwards.
	Publish(ctx context.Context, msg *Message) error
	// Subscribe calls h for every message matching filter until the
	// subscription is removed. ctx bounds the subscribe call itself, not
	// the subscription's life. opts may be nil for the defaults.
	Subscribe(ctx context.Context, filter string, h Handler, opts *SubscribeOptions) (Subscription, error)
	// Close removes every subscription, waits for running handlers to
	// return (or ctx to end) and releases resources. It is safe to call
	// more than once.
	Close(ctx context.Context) error
}

// Subscription is one active subscription. Its methods are safe for
// concurrent use.
type Subscription interface {
	// Filter returns the filter as given to Subscribe (with any $share
	// prefix).
	Filter() string
	// Unsubscribe stops delivery: no handler call starts after it returns
	// (one already running may finish). Messages still buffered are
	// discarded. It is safe to call more than once and from the handler.
	Unsubscribe(ctx context.Context) error
	// Dropped counts QoS 0 messages dropped because the buffer was full.
	Dropped() uint64
}

// Drainer is implemented by subscriptions that can leave the bus and still
// hand every message already buffered to their handler, which a consumer
// replaced by another needs to lose nothing: Drain takes the subscription
// off the bus, then returns once the handler has returned for the last
// buffered message (or ctx ends; the handler then goes on with the rest).
// It must not be called from the handler. membus and mqttbus
// subscriptions implement it.
type Drainer interface {
	Drain(ctx context.Context) error
}

// DefaultBuffer is the subscription buffer used when none is given.
const DefaultBuffer = 1024

// SubscribeOptions tune one subscription. A nil *SubscribeOptions means
// QoS 1 and the default buffer.
type SubscribeOptions struct {
	// QoS is the highest QoS the subscriber accepts; messages are delivered
	// at min(published QoS, QoS).
	QoS QoS
	// Buffer bounds the messages waiting for the handler; 0 means
	// DefaultBuffer.
	Buffer int
	// NoLocal asks not to receive messages that this same client published
	// (MQTT v5 No Local).
	NoLocal bool
	// RetainAsPublished keeps the retain flag of live messages as the
	// publisher set it (MQTT v5 Retain As Published); bridges use it.
	RetainAsPublished bool
}

// SubscribeRequest is a checked Subscribe call, for implementations.
type SubscribeRequest struct {
	Filter  string           // as given, with any $share prefix
	Group   string           // the shared subscription's group; "" if not shared
	Inner   string           // the filter without "$share/{group}/"
	Options SubscribeOptions // with the defaults filled in
}

// Shared reports whether the request is a shared subscription.
func (r SubscribeRequest) Shared() bool { return r.Group != "" }

// CheckSubscribe validates a Subscribe call's arguments and fills in the
// option defaults (nil options: QoS 1, DefaultBuffer). Every Bus
// implementation calls it, so that all of them refuse the same things with
// the same errors.
func CheckSubscribe(filter string, h Handler, opts *SubscribeOptions) (SubscribeRequest, error) {
	if err := ValidateFilter(filter); err != nil {
		return SubscribeRequest{}, err
	}
	if h == nil {
		return SubscribeRequest{}, fmt.Errorf("subscribe %q: nil handler", filter)
	}
	o := SubscribeOptions{QoS: AtLeastOnce}
	if opts != nil {
		o = *opts
	}
	if !o.QoS.Valid() {
		return SubscribeRequest{}, fmt.Errorf("subscribe %q: %w: %d", filter, ErrInvalidQoS, o.QoS)
	}
	if o.Buffer < 0 {
		return SubscribeRequest{}, fmt.Errorf("subscribe %q: negative buffer %d", filter, o.Buffer)
	}
	if o.Buffer == 0 {
		o.Buffer = DefaultBuffer
	}
	group, inner, shared := SplitShared(filter)
	if shared && o.NoLocal {
		return SubscribeRequest{}, fmt.Errorf("subscribe %q: %w: NoLocal is not allowed on a shared subscription (MQTT v5 3.8.3.1)", filter, ErrInvalidFilter)
	}
	return SubscribeRequest{Filter: filter, Group: group, Inner: inner, Options: o}, nil
}

// QueueStats describes an outbound store-and-forward queue.
type QueueStats struct {
	Messages int   // messages waiting to be sent
	Bytes    int64 // their size on disk
	Dropped  uint64
	// Damaged counts stretches of the queue's files found damaged or
	// missing (each cost the messages it held; every intact one is kept),
	// and queued messages that could not be read back.
	Damaged uint64
}

// QueueReporter is implemented by buses that hold an outbound queue (such as
// mqttbus). Bridges and status pages find it by type assertion.
type QueueReporter interface {
	QueueStats() QueueStats
}
