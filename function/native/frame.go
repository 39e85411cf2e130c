package native

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/edgekit/edgekit/function/fnapi"
)

// The wire format, version 2. Every frame is a little-endian uint32 body
// length followed by the body; the body's first byte is its type:
//
//	'R' ready       function → host  the handler is loaded; the body may say
//	                                 "counts-output": the function sends 'W'
//	                                 whenever it wrote to stdout or stderr
//	                                 during an invocation
//	'I' init error  function → host  JSON {"errorType","errorMessage","stackTrace"}
//	'V' invoke      host → function  u64 seq, i64 deadline (Unix ms), u32 n, n bytes of JSON metadata, payload
//	'O' result      function → host  u64 seq, payload
//	'E' error       function → host  u64 seq, JSON {"errorType","errorMessage","stackTrace"}
//	'W' wrote       function → host  u64 seq: before the result or error of
//	                                 invocation seq, it wrote output (sent by
//	                                 functions that count their output)
//	'L' log         function → host  u8 level (0 debug, 1 info, 2 warn, 3 error), text
//	'M' metric      function → host  u16 n, n bytes of name, f64 value
//	'C' call        function → host  u64 id, i64 deadline (Unix ms, 0: none), u16 n, n bytes of
//	                                 method, u32 m, m bytes of JSON arguments, payload
//	'K' config      host → function  the function's configuration (JSON), changed by a
//	                                 deployment while the instance runs
//
// The host writes invoke and config frames on the function's file
// descriptor 3. The
// function writes ready, init error, result and error frames on fd 4, and
// log, metric and call frames on fd 5: the host reads replies on the
// goroutine that runs the invocation, and the rest at any time. A call
// (package fnapi names the methods) is answered on fd 6 by a result or an
// error frame whose seq is the call's id. A call with id 0 wants no
// answer: the host carries such calls out one after another, in the order
// they came, before it reads the next frame, and keeps their refusals for
// the next fnapi.Flush call. stdout and stderr stay free for plain log
// lines.
const (
	FrameReady     = 'R'
	FrameInitError = 'I'
	FrameInvoke    = 'V'
	FrameResult    = 'O'
	FrameError     = 'E'
	FrameWrote     = 'W'
	FrameLog       = 'L'
	FrameMetric    = 'M'
	FrameCall      = 'C'
	FrameConfig    = 'K'
)

// MaxFrame bounds a frame body (a payload plus its header).
const MaxFrame = 64 << 20

// ErrFrame means a malformed frame.
var ErrFrame = errors.New("malformed native protocol frame")

// Frame is one decoded frame. Which fields are set depends on Type.
type Frame struct {
	Type     byte
	Seq      uint64 // invoke, result, error, wrote: the invocation; call: its id
	Deadline int64  // invoke, call: Unix milliseconds
	Meta     []byte // invoke: JSON metadata; call: JSON arguments
	Payload  []byte // invoke, result, call: payload; error, init error: JSON; log: text
	Level    byte   // log
	Name     string // metric; call: the method
	Value    float64
}

// AppendFrame appends f's encoding to b.
func AppendFrame(b []byte, f *Frame) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, f.Type)
	le := binary.LittleEndian
	switch f.Type {
	case FrameInvoke:
		b = le.AppendUint64(b, f.Seq)
		b = le.AppendUint64(b, uint64(f.Deadline))
		b = le.AppendUint32(b, uint32(len(f.Meta)))
		b = append(b, f.Meta...)
		b = append(b, f.Payload...)
	case FrameResult, FrameError, FrameWrote:
		b = le.AppendUint64(b, f.Seq)
		b = append(b, f.Payload...)
	case FrameInitError, FrameReady, FrameConfig:
		b = append(b, f.Payload...)
	case FrameLog:
		b = append(b, f.Level)
		b = append(b, f.Payload...)
	case FrameMetric:
		b = le.AppendUint16(b, uint16(len(f.Name)))
		b = append(b, f.Name...)
		b = le.AppendUint64(b, math.Float64bits(f.Value))
	case FrameCall:
		b = le.AppendUint64(b, f.Seq)
		b = le.AppendUint64(b, uint64(f.Deadline))
		b = le.AppendUint16(b, uint16(len(f.Name)))
		b = append(b, f.Name...)
		b = le.AppendUint32(b, uint32(len(f.Meta)))
		b = append(b, f.Meta...)
		b = append(b, f.Payload...)
	}
	le.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// ReadFrame reads one frame. The returned frame's slices stay valid until
// the next call with the same buf.
func ReadFrame(r *bufio.Reader, buf *[]byte) (*Frame, error) {
	f := &Frame{}
	if err := ReadFrameTo(r, buf, f); err != nil {
		return nil, err
	}
	return f, nil
}

// ReadFrameTo is ReadFrame into f, which a reader of a stream of frames
// reuses. A frame that fits r's buffer is parsed where it lies there,
// without a copy; its slices, too, stay valid until the next call.
func ReadFrameTo(r *bufio.Reader, buf *[]byte, f *Frame) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return fmt.Errorf("%w: body of %d bytes", ErrFrame, n)
	}
	if int(n) <= r.Size() {
		body, err := r.Peek(int(n))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFrame, err)
		}
		_, _ = r.Discard(int(n)) // the bytes stay in r's buffer until its next read
		return parseFrame(body, f)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	body := (*buf)[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("%w: %v", ErrFrame, err)
	}
	return parseFrame(body, f)
}

// ParseFrame decodes a frame body (without its length prefix).
func ParseFrame(body []byte) (*Frame, error) {
	f := &Frame{}
	if err := parseFrame(body, f); err != nil {
		return nil, err
	}
	return f, nil
}

func parseFrame(body []byte, f *Frame) error {
	if len(body) == 0 {
		return fmt.Errorf("%w: empty body", ErrFrame)
	}
	*f = Frame{Type: body[0]}
	rest := body[1:]
	le := binary.LittleEndian
	// need takes the count as read from the frame: on a 32-bit gateway a
	// uint32 does not fit an int.
	need := func(n uint64) error {
		if uint64(len(rest)) < n {
			return fmt.Errorf("%w: type %q needs %d more bytes, has %d", ErrFrame, f.Type, n, len(rest))
		}
		return nil
	}
	switch f.Type {
	case FrameReady, FrameInitError, FrameConfig:
		f.Payload = rest
	case FrameInvoke:
		if err := need(20); err != nil {
			return err
		}
		f.Seq, f.Deadline = le.Uint64(rest), int64(le.Uint64(rest[8:]))
		m := uint64(le.Uint32(rest[16:]))
		rest = rest[20:]
		if err := need(m); err != nil {
			return err
		}
		f.Meta, f.Payload = rest[:m], rest[m:]
	case FrameResult, FrameError, FrameWrote:
		if err := need(8); err != nil {
			return err
		}
		f.Seq, f.Payload = le.Uint64(rest), rest[8:]
	case FrameLog:
		if err := need(1); err != nil {
			return err
		}
		f.Level, f.Payload = rest[0], rest[1:]
	case FrameMetric:
		if err := need(2); err != nil {
			return err
		}
		m := uint64(le.Uint16(rest))
		rest = rest[2:]
		if err := need(m + 8); err != nil {
			return err
		}
		f.Name, f.Value = string(rest[:m]), math.Float64frombits(le.Uint64(rest[m:]))
	case FrameCall:
		if err := need(18); err != nil {
			return err
		}
		f.Seq, f.Deadline = le.Uint64(rest), int64(le.Uint64(rest[8:]))
		m := uint64(le.Uint16(rest[16:]))
		rest = rest[18:]
		if err := need(m + 4); err != nil {
			return err
		}
		f.Name = method(rest[:m])
		n := uint64(le.Uint32(rest[m:]))
		rest = rest[m+4:]
		if err := need(n); err != nil {
			return err
		}
		f.Meta, f.Payload = rest[:n], rest[n:]
	default:
		return fmt.Errorf("%w: unknown type %q", ErrFrame, f.Type)
	}
	return nil
}

// method is a call's method name, without a copy for those package fnapi
// names: a stream of calls allocates none for it.
func method(b []byte) string {
	switch string(b) {
	case fnapi.Publish:
		return fnapi.Publish
	case fnapi.Invoke:
		return fnapi.Invoke
	case fnapi.DeviceGet:
		return fnapi.DeviceGet
	case fnapi.DeviceSet:
		return fnapi.DeviceSet
	case fnapi.DeviceCall:
		return fnapi.DeviceCall
	case fnapi.DeviceList:
		return fnapi.DeviceList
	case fnapi.ConfigGet:
		return fnapi.ConfigGet
	case fnapi.Flush:
		return fnapi.Flush
	case fnapi.DriverReport:
		return fnapi.DriverReport
	case fnapi.DriverEvent:
		return fnapi.DriverEvent
	case fnapi.DriverState:
		return fnapi.DriverState
	case fnapi.DriverHello:
		return fnapi.DriverHello
	}
	return string(b)
}
