package bus

import (
	"fmt"
	"time"
)

// QoS is an MQTT quality-of-service level.
type QoS byte

// The three MQTT QoS levels.
const (
	AtMostOnce  QoS = 0 // QoS 0: fire and forget.
	AtLeastOnce QoS = 1 // QoS 1: acknowledged, may be duplicated.
	ExactlyOnce QoS = 2 // QoS 2: acknowledged in two steps.
)

// Valid reports whether q is 0, 1 or 2.
func (q QoS) Valid() bool { return q <= ExactlyOnce }

// String returns "qos0", "qos1" or "qos2".
func (q QoS) String() string { return fmt.Sprintf("qos%d", byte(q)) }

// UserProperty is one MQTT v5 user property. A message may carry the same
// key more than once; order is kept.
type UserProperty struct {
	Key   string
	Value string
}

// Message is one publication on the bus.
//
// The zero value is not valid: Topic is required.
type Message struct {
	// Topic is the topic name; it must not contain wildcards.
	Topic string
	// Payload is the application message; it may be empty.
	Payload []byte
	// QoS is the quality of service asked for by the publisher. A subscriber
	// receives min(QoS, its subscription's QoS).
	QoS QoS
	// Retain asks the bus to keep the message as the topic's retained
	// message; an empty payload with Retain removes it. On delivery it says
	// whether the message was retained (see the package's delivery contract).
	Retain bool
	// UserProperties are application key/value pairs, in order.
	UserProperties []UserProperty
	// ContentType describes the payload, for example "application/json".
	ContentType string
	// ResponseTopic is where a request's reply should go.
	ResponseTopic string
	// CorrelationData ties a reply to its request.
	CorrelationData []byte
	// MessageExpiry is how long the message stays valid; zero means it does
	// not expire. On delivery it is the time that was left.
	MessageExpiry time.Duration
}

// Property returns the value of the first user property with the given key.
func (m *Message) Property(key string) (string, bool) {
	for _, p := range m.UserProperties {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Validate checks the topic name, the QoS and the expiry.
func (m *Message) Validate() error {
	if err := ValidateTopic(m.Topic); err != nil {
		return err
	}
	if !m.QoS.Valid() {
		return fmt.Errorf("%w: %d for topic %q (want 0, 1 or 2)", ErrInvalidQoS, m.QoS, m.Topic)
	}
	if m.MessageExpiry < 0 {
		return fmt.Errorf("%w: negative message expiry %v for topic %q", ErrInvalidMessage, m.MessageExpiry, m.Topic)
	}
	if m.ResponseTopic != "" {
		if err := ValidateTopic(m.ResponseTopic); err != nil {
			return fmt.Errorf("response topic: %w", err)
		}
	}
	return nil
}

// ShallowCopy returns a copy of m that shares the payload, correlation data
// and user properties.
func (m *Message) ShallowCopy() *Message {
	c := *m
	return &c
}
