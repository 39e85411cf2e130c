package mqttbus

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
)

func TestCodecRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	in := &bus.Message{
		Topic: "a/b", Payload: []byte{0, 1, 2}, QoS: bus.AtLeastOnce, Retain: true,
		UserProperties: []bus.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: ""}},
		ContentType:    "x/y", ResponseTopic: "r", CorrelationData: []byte("c"), MessageExpiry: time.Minute,
	}
	out, expired, err := decodeMessage(encodeMessage(in, now), now.Add(10*time.Second))
	if err != nil || expired {
		t.Fatal(err, expired)
	}
	if out.Topic != in.Topic || !bytes.Equal(out.Payload, in.Payload) || out.QoS != in.QoS || !out.Retain ||
		!slices.Equal(out.UserProperties, in.UserProperties) || out.ContentType != in.ContentType ||
		out.ResponseTopic != in.ResponseTopic || !bytes.Equal(out.CorrelationData, in.CorrelationData) ||
		out.MessageExpiry != 50*time.Second {
		t.Errorf("round trip changed the message: %+v", out)
	}
	if _, expired, _ := decodeMessage(encodeMessage(in, now), now.Add(2*time.Minute)); !expired {
		t.Error("expired message not reported")
	}
	if _, _, err := decodeMessage([]byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, now); !errors.Is(err, errRecord) {
		t.Errorf("unknown version: %v", err)
	}
}

// FuzzDecodeMessage: decoding arbitrary queue records never panics, and
// whatever decodes re-encodes to an equal message.
func FuzzDecodeMessage(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add(encodeMessage(&bus.Message{Topic: "t", Payload: []byte("p"), QoS: 1}, now))
	f.Add(encodeMessage(&bus.Message{Topic: "a/b", UserProperties: []bus.UserProperty{{Key: "a", Value: "b"}}, CorrelationData: []byte{1}, MessageExpiry: time.Hour}, now))
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 't', 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, expired, err := decodeMessage(b, now)
		if err != nil || expired {
			return
		}
		m2, _, err := decodeMessage(encodeMessage(m, now), now)
		if err != nil {
			t.Fatalf("re-encoding a decoded message fails: %v", err)
		}
		if m2.Topic != m.Topic || !bytes.Equal(m2.Payload, m.Payload) || len(m2.UserProperties) != len(m.UserProperties) {
			t.Fatalf("re-encode changed the message")
		}
	})
}
