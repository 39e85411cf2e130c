package native_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
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

// FuzzReadFrameTo: a stream of any bytes, read through a reader whose
// buffer some frames fit (parsed where they lie) and others do not
// (copied), gives each frame as ParseFrame gives its body, into one
// reused Frame, and ends with io.EOF, io.ErrUnexpectedEOF or ErrFrame.
func FuzzReadFrameTo(f *testing.F) {
	var all []byte
	for i := range frames {
		all = native.AppendFrame(all, &frames[i])
	}
	f.Add(all)
	f.Add(native.AppendFrame(nil, &native.Frame{Type: native.FrameCall, Name: "publish", Payload: bytes.Repeat([]byte{7}, 100)}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(stream), 16) // bufio's least
		var buf []byte
		var fr native.Frame
		rest := stream
		for {
			err := native.ReadFrameTo(r, &buf, &fr)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, native.ErrFrame) {
					t.Fatalf("error %v", err)
				}
				return
			}
			n := int(binary.LittleEndian.Uint32(rest))
			want, err := native.ParseFrame(rest[4 : 4+n])
			if err != nil || !same(&fr, want) {
				t.Fatalf("read %+v, the body parses as %+v (%v)", fr, want, err)
			}
			rest = rest[4+n:]
		}
	})
}
