package native_test

import (
	"bufio"
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/edgekit/edgekit/function/native"
)

// frames is one of each type, as the two sides send them.
var frames = []native.Frame{
	{Type: native.FrameReady, Payload: []byte("counts-output")},
	{Type: native.FrameInitError, Payload: []byte(`{"errorType":"E","errorMessage":"m"}`)},
	{Type: native.FrameInvoke, Seq: 7, Deadline: 1_700_000_000_000, Meta: []byte(`{"requestId":"r"}`), Payload: []byte(`{"a":1}`)},
	{Type: native.FrameResult, Seq: 7, Payload: []byte(`"ok"`)},
	{Type: native.FrameError, Seq: 7, Payload: []byte(`{"errorType":"E"}`)},
	{Type: native.FrameWrote, Seq: 7},
	{Type: native.FrameLog, Level: 2, Payload: []byte("line")},
	{Type: native.FrameMetric, Name: "temp", Value: 21.5},
	{Type: native.FrameConfig, Payload: []byte(`{"threshold":40}`)},
	{Type: native.FrameCall, Seq: 9, Deadline: 1_700_000_000_000, Name: "publish", Meta: []byte(`{"topic":"outputs/f/x"}`), Payload: []byte{0, 1, 2}},
}

func TestFrameRoundTrip(t *testing.T) {
	var b []byte
	for i := range frames {
		b = native.AppendFrame(b, &frames[i])
	}
	r := bufio.NewReader(bytes.NewReader(b))
	var buf []byte
	for i := range frames {
		got, err := native.ReadFrame(r, &buf)
		if err != nil {
			t.Fatalf("frame %q: %v", frames[i].Type, err)
		}
		if !same(got, &frames[i]) {
			t.Errorf("frame %q: got %+v, want %+v", frames[i].Type, got, frames[i])
		}
	}
}

// TestFrameRefused: what a hostile function may write is refused naming
// the problem, never a panic, whatever the lengths inside claim.
func TestFrameRefused(t *testing.T) {
	for name, body := range map[string][]byte{
		"empty":                 {},
		"unknown type":          {'Z'},
		"short invoke":          {native.FrameInvoke, 1, 2},
		"invoke meta too long":  append(append([]byte{native.FrameInvoke}, make([]byte, 16)...), 0xff, 0xff, 0xff, 0xff),
		"short call":            {native.FrameCall, 1},
		"call method too long":  append(append([]byte{native.FrameCall}, make([]byte, 16)...), 0xff, 0xff),
		"call args too long":    append(append([]byte{native.FrameCall}, make([]byte, 16)...), 0, 0, 0xff, 0xff, 0xff, 0xff),
		"metric name too long":  {native.FrameMetric, 0xff, 0xff, 1},
		"result without its id": {native.FrameResult, 1, 2, 3},
	} {
		if f, err := native.ParseFrame(body); !errors.Is(err, native.ErrFrame) {
			t.Errorf("%s: got %+v, %v; want ErrFrame", name, f, err)
		}
	}
}

// FuzzParseFrame: any body parses or is refused with ErrFrame, and what
// parses encodes back to a frame that parses the same.
func FuzzParseFrame(f *testing.F) {
	for i := range frames {
		b := native.AppendFrame(nil, &frames[i])
		f.Add(b[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := native.ParseFrame(body)
		if err != nil {
			if !errors.Is(err, native.ErrFrame) {
				t.Fatalf("error %v is not ErrFrame", err)
			}
			return
		}
		again, err := native.ParseFrame(native.AppendFrame(nil, fr)[4:])
		if err != nil || !same(again, fr) {
			t.Fatalf("%+v encoded and parsed again: %+v, %v", fr, again, err)
		}
	})
}

func same(a, b *native.Frame) bool {
	norm := func(f *native.Frame) native.Frame {
		c := *f
		for _, p := range []*[]byte{&c.Meta, &c.Payload} {
			if len(*p) == 0 {
				*p = nil
			}
		}
		if math.IsNaN(c.Value) {
			c.Value = 0
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
