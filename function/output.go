package function

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outputPipe is one of an instance's output pipes (stdout or stderr) and
// its line reader, which makes each line a log record carrying the request
// id of the invocation under way.
//
// An invocation's output is in the log store before its REPORT record: at
// the invocation's end, when the process wrote anything since it began, the
// host writes a fence — a line holding a token of its own — into the pipe
// through its copy of the write end, and waits (at most fenceWait) until
// the reader has met it. A pipe keeps order, so every line the process
// wrote before it answered is logged by then. The token is random per pipe
// and only the host ever sees it (the child cannot read its own output
// pipe), so a function cannot forge a fence.
type outputPipe struct {
	r     *os.File
	child *os.File // the write end the process gets; closed once it has it
	// w is the host's own open file description of the write end,
	// non-blocking (the child's stays blocking), for fences; nil where
	// /proc/self/fd cannot reopen it, and then there are none.
	w      *os.File
	raw    syscall.RawConn // r's, for FIONREAD
	token  []byte          // the fence line, without its newline
	stream string          // "stdout" or "stderr"
	level  slog.Level

	read   atomic.Int64 // bytes the reader has taken from the pipe
	sent   atomic.Int64 // fences written
	met    atomic.Int64 // fences the reader has met
	signal chan struct{}
	closeW sync.Once
}

// fenceWait bounds the wait for a fence: output a reader cannot log that
// fast (a flood, a line without its end) is logged later, not waited for.
const fenceWait = 100 * time.Millisecond

// maxLine is the longest output line kept whole; a longer one is logged
// in pieces of this size.
const maxLine = 1 << 20

func newOutputPipe(stream string, level slog.Level) (*outputPipe, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	raw, err := r.SyscallConn()
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	o := &outputPipe{r: r, child: w, raw: raw, stream: stream, level: level, signal: make(chan struct{}, 1),
		token: []byte("\x00edgekit-fence-" + hex.EncodeToString(key[:]))}
	// Fd puts the child's description in blocking mode, as starting the
	// process would.
	if fw, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(w.Fd())), os.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
		o.w = fw
	}
	return o, nil
}

// started closes the child's write end once the process has its copy.
func (o *outputPipe) started() { o.child.Close() }

// closeWrite closes the host's write end (once the process has exited):
// the reader then sees the end of the output when no process of the
// instance holds the pipe any more.
func (o *outputPipe) closeWrite() {
	o.closeW.Do(func() {
		if o.w != nil {
			o.w.Close()
		}
	})
}

func (o *outputPipe) close() {
	o.child.Close()
	o.closeWrite()
	o.r.Close()
}

// mark is where an invocation begins, for quiet.
func (o *outputPipe) mark() int64 { return o.read.Load() }

// pending reports, for each of a and b, whether the process wrote
// anything since its mark: its pipe holds bytes, or its reader has taken
// some. One poll(2) asks for both pipes.
func pending(a, b *outputPipe, markA, markB int64) (bool, bool) {
	fds := [2]unix.PollFd{{Fd: -1, Events: unix.POLLIN}, {Fd: -1, Events: unix.POLLIN}}
	polled := false
	// A pipe that is closed (the instance has gone) has nothing to wait for.
	_ = a.raw.Control(func(fa uintptr) {
		fds[0].Fd = int32(fa)
		_ = b.raw.Control(func(fb uintptr) {
			fds[1].Fd = int32(fb)
			for {
				_, err := unix.Poll(fds[:], 0)
				if err != unix.EINTR {
					polled = err == nil
					return
				}
			}
		})
	})
	if !polled {
		return false, false
	}
	return fds[0].Revents&unix.POLLIN != 0 || a.read.Load() != markA, fds[1].Revents&unix.POLLIN != 0 || b.read.Load() != markB
}

// fence writes a fence and returns the number the reader will count when
// it meets it, or 0 when it could not be written.
func (o *outputPipe) fence(deadline time.Time) int64 {
	if o.w == nil {
		return 0
	}
	if err := o.w.SetWriteDeadline(deadline); err != nil {
		return 0
	}
	n := o.sent.Add(1)
	if _, err := o.w.Write(append(o.token[:len(o.token):len(o.token)], '\n')); err != nil {
		return 0
	}
	return n
}

// await waits until the reader has met fence n, or until deadline.
func (o *outputPipe) await(n int64, t *time.Timer) bool {
	for o.met.Load() < n {
		select {
		case <-o.signal:
		case <-t.C:
			return false
		}
	}
	return true
}

// countingReader counts what a line reader takes from its pipe.
type countingReader struct {
	f *os.File
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// lines logs each line of the pipe until it ends (or its read deadline
// passes, after the exit), with the request id current() names; keep sees
// every line, for the instance's exit errors.
func (o *outputPipe) lines(log *slog.Logger, current func() string, keep func(string)) {
	br := bufio.NewReaderSize(countingReader{o.r, &o.read}, 64<<10)
	var long []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			if len(long) >= maxLine {
				o.log(log, current, keep, long)
				long = long[:0]
			}
			continue
		}
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			line := chunk[:len(chunk)-1]
			if len(long) > 0 {
				long = append(long, line...)
				line = long
			}
			if rest, ok := bytes.CutSuffix(line, o.token); ok {
				// The fence; output before it that did not end its line
				// is a line of its own.
				if len(rest) > 0 {
					o.log(log, current, keep, rest)
				}
				o.met.Add(1)
				select {
				case o.signal <- struct{}{}:
				default:
				}
			} else {
				o.log(log, current, keep, line)
			}
			long = long[:0]
			continue
		}
		if err != nil {
			if len(long)+len(chunk) > 0 {
				o.log(log, current, keep, append(long, chunk...))
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
				log.Warn("reading the instance's output", "stream", o.stream, "err", err)
			}
			return
		}
	}
}

func (o *outputPipe) log(log *slog.Logger, current func() string, keep func(string), b []byte) {
	line := string(b)
	keep(line)
	if id := current(); id != "" {
		log.Log(context.Background(), o.level, line, "stream", o.stream, "request_id", id)
		return
	}
	log.Log(context.Background(), o.level, line, "stream", o.stream)
}
