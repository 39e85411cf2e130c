package mqttbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
)

// The outbound queue stores each message as one record:
//
//	byte    format version (1)
//	byte    QoS
//	byte    flags (bit 0: retain)
//	int64   expiry deadline, Unix nanoseconds, little-endian (0: none)
//	string  topic, content type, response topic   (uvarint length + bytes)
//	bytes   correlation data, payload             (uvarint length + bytes)
//	uvarint number of user properties, then key and value strings
const recordVersion = 1

var errRecord = errors.New("malformed queued message")

func encodeMessage(m *bus.Message, now time.Time) []byte {
	n := 3 + 8 + 5*binary.MaxVarintLen64 + len(m.Topic) + len(m.ContentType) + len(m.ResponseTopic) + len(m.CorrelationData) + len(m.Payload) + binary.MaxVarintLen64
	for _, p := range m.UserProperties {
		n += 2*binary.MaxVarintLen64 + len(p.Key) + len(p.Value)
	}
	b := make([]byte, 0, n)
	var flags byte
	if m.Retain {
		flags |= 1
	}
	b = append(b, recordVersion, byte(m.QoS), flags)
	var deadline int64
	if m.MessageExpiry > 0 {
		deadline = now.Add(m.MessageExpiry).UnixNano()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(deadline))
	for _, s := range []string{m.Topic, m.ContentType, m.ResponseTopic} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, s := range [][]byte{m.CorrelationData, m.Payload} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.UserProperties)))
	for _, p := range m.UserProperties {
		b = binary.AppendUvarint(b, uint64(len(p.Key)))
		b = append(b, p.Key...)
		b = binary.AppendUvarint(b, uint64(len(p.Value)))
		b = append(b, p.Value...)
	}
	return b
}

// decodeMessage parses a queued record. expired reports that its expiry
// deadline has passed at now.
func decodeMessage(b []byte, now time.Time) (m *bus.Message, expired bool, err error) {
	if len(b) < 11 {
		return nil, false, fmt.Errorf("%w: %d bytes, shorter than the header", errRecord, len(b))
	}
	if b[0] != recordVersion {
		return nil, false, fmt.Errorf("%w: format version %d, want %d", errRecord, b[0], recordVersion)
	}
	m = &bus.Message{QoS: bus.QoS(b[1]), Retain: b[2]&1 != 0}
	deadline := int64(binary.LittleEndian.Uint64(b[3:]))
	r := reader{b: b[11:]}
	m.Topic = string(r.bytes())
	m.ContentType = string(r.bytes())
	m.ResponseTopic = string(r.bytes())
	if c := r.bytes(); len(c) > 0 {
		m.CorrelationData = c
	}
	m.Payload = r.bytes()
	if n := r.uvarint(); n > 0 {
		if n > uint64(len(r.b)) {
			return nil, false, fmt.Errorf("%w: %d user properties in %d bytes", errRecord, n, len(r.b))
		}
		m.UserProperties = make([]bus.UserProperty, 0, n)
		for range n {
			m.UserProperties = append(m.UserProperties, bus.UserProperty{Key: string(r.bytes()), Value: string(r.bytes())})
		}
	}
	if r.err != nil {
		return nil, false, r.err
	}
	if len(r.b) != 0 {
		return nil, false, fmt.Errorf("%w: %d trailing bytes", errRecord, len(r.b))
	}
	if err := m.Validate(); err != nil {
		return nil, false, fmt.Errorf("%w: %w", errRecord, err)
	}
	if deadline != 0 {
		left := time.Unix(0, deadline).Sub(now)
		if left <= 0 {
			return m, true, nil
		}
		m.MessageExpiry = left
	}
	return m, false, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad length", errRecord)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: field of %d bytes, %d left", errRecord, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}
