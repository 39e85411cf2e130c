package function

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/edgekit/edgekit/function/native"
	"github.com/edgekit/edgekit/invoke"
)

// nativeConn is the host's end of the native framed protocol with one
// instance: it writes invoke frames to the instance's fd 3 and reads its
// fd 4 (package native documents the format).
type nativeConn struct {
	fn, ver string
	w       *os.File
	r       *os.File
	log     *slog.Logger
	metric  func(name string, v float64)

	wmu  sync.Mutex
	wbuf []byte

	ready     chan struct{}
	readyOnce sync.Once
	initErr   chan error

	mu      sync.Mutex
	pending map[uint64]pendingCall
}

// pendingCall is an invocation waiting for its result frame: early, when
// set, completes it on the reader goroutine; done tells the instance.
type pendingCall struct {
	done  chan callResult
	early func(invoke.Response, error) bool
}

// newNativePipes makes the two pipes; the child gets childR as fd 3 and
// childW as fd 4.
func newNativePipes() (hostW, childR, childW, hostR *os.File, err error) {
	childR, hostW, err = os.Pipe()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	hostR, childW, err = os.Pipe()
	if err != nil {
		childR.Close()
		hostW.Close()
		return nil, nil, nil, nil, err
	}
	return hostW, childR, childW, hostR, nil
}

// read runs until the instance's end closes.
func (c *nativeConn) read() {
	r := bufio.NewReaderSize(c.r, 64<<10)
	var buf []byte
	for {
		f, err := native.ReadFrame(r, &buf)
		if err != nil {
			return
		}
		switch f.Type {
		case native.FrameReady:
			c.readyOnce.Do(func() { close(c.ready) })
		case native.FrameInitError:
			select {
			case c.initErr <- c.functionError(f.Payload):
			default:
			}
		case native.FrameResult:
			c.deliver(f.Seq, callResult{resp: invoke.Response{Payload: bytes.Clone(f.Payload)}})
		case native.FrameError:
			c.deliver(f.Seq, callResult{err: c.functionError(f.Payload)})
		case native.FrameLog:
			level := map[byte]slog.Level{0: slog.LevelDebug, 1: slog.LevelInfo, 2: slog.LevelWarn, 3: slog.LevelError}[f.Level]
			c.log.Log(context.Background(), level, string(f.Payload), "stream", "native")
		case native.FrameMetric:
			c.metric(f.Name, f.Value)
		}
	}
}

func (c *nativeConn) functionError(body []byte) *invoke.Error {
	var re runtimeError
	if err := json.Unmarshal(body, &re); err != nil {
		re.Message = string(body)
	}
	if re.Type == "" {
		re.Type = "Unhandled"
	}
	return &invoke.Error{Function: c.fn, Version: c.ver, Type: re.Type, Message: re.Message, Stack: re.Stack}
}

func (c *nativeConn) deliver(seq uint64, r callResult) {
	c.mu.Lock()
	pc, ok := c.pending[seq]
	delete(c.pending, seq)
	c.mu.Unlock()
	if !ok {
		return
	}
	if pc.early != nil {
		pc.early(r.resp, r.err)
	}
	pc.done <- r
}

// send writes an invoke frame and returns the channel its result comes on.
func (c *nativeConn) send(seq uint64, deadlineMs int64, meta, payload []byte, early func(invoke.Response, error) bool) (chan callResult, error) {
	ch := make(chan callResult, 1)
	c.mu.Lock()
	c.pending[seq] = pendingCall{done: ch, early: early}
	c.mu.Unlock()
	c.wmu.Lock()
	c.wbuf = native.AppendFrame(c.wbuf[:0], &native.Frame{Type: native.FrameInvoke, Seq: seq, Deadline: deadlineMs, Meta: meta, Payload: payload})
	_, err := c.w.Write(c.wbuf)
	c.wmu.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.pending, seq)
		c.mu.Unlock()
		return nil, fmt.Errorf("writing to the instance: %w", err)
	}
	return ch, nil
}

func (c *nativeConn) close() {
	c.w.Close()
	c.r.Close()
}
