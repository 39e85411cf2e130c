package function

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/native"
)

// TestCallServerRefusals: what a function sends that it may not — too
// big, too late, too many at once — is answered with an error naming
// why, before the handler sees it; a call whose deadline passes while it
// runs is answered Timeout; close ends the calls under way.
func TestCallServerRefusals(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	release := make(chan struct{})
	started := make(chan string, 2*fnapi.MaxCallsInFlight)
	s := newCallServer(Spec{Name: "f", Timeout: Duration(time.Minute)}, "i-1", nil, func(ctx context.Context, c *Call) ([]byte, error) {
		started <- c.Method
		switch c.Method {
		case "block":
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case "fail":
			return nil, fnapi.Errorf(fnapi.ErrForbidden, "not this")
		case "hang":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return []byte(`"ok"`), nil
	}, w, slog.New(slog.NewTextHandler(io.Discard, nil)))
	br := bufio.NewReader(r)
	var buf []byte
	answer := func(seq uint64) (string, *fnapi.Error) {
		t.Helper()
		f, err := native.ReadFrame(br, &buf)
		if err != nil {
			t.Fatal(err)
		}
		if f.Seq != seq {
			t.Fatalf("answer to call %d, want %d", f.Seq, seq)
		}
		if f.Type == native.FrameResult {
			return string(f.Payload), nil
		}
		var e fnapi.Error
		if err := json.Unmarshal(f.Payload, &e); err != nil {
			t.Fatal(err)
		}
		return "", &e
	}
	call := func(seq uint64, method string, deadline time.Time, args, payload []byte) {
		f := &native.Frame{Type: native.FrameCall, Seq: seq, Name: method, Meta: args, Payload: payload}
		if !deadline.IsZero() {
			f.Deadline = deadline.UnixMilli()
		}
		s.serve(f)
	}
	refused := func(seq uint64, kind error) {
		t.Helper()
		if _, e := answer(seq); e == nil || !errors.Is(e, kind) {
			t.Errorf("call %d: %v, want %v", seq, e, kind)
		}
	}

	call(1, "ok", time.Time{}, make([]byte, fnapi.MaxArgs+1), nil)
	refused(1, fnapi.ErrBadRequest)
	call(2, "ok", time.Time{}, nil, make([]byte, fnapi.MaxPayload+1))
	refused(2, fnapi.ErrBadRequest)
	call(3, "ok", time.Now().Add(-time.Second), nil, nil)
	refused(3, fnapi.ErrTimeout)

	for i := range fnapi.MaxCallsInFlight {
		call(uint64(10+i), "block", time.Time{}, nil, nil)
	}
	for range fnapi.MaxCallsInFlight {
		<-started
	}
	call(100, "ok", time.Time{}, nil, nil)
	refused(100, fnapi.ErrTooManyCalls)
	close(release)
	for range fnapi.MaxCallsInFlight {
		f, err := native.ReadFrame(br, &buf)
		if err != nil || f.Type != native.FrameResult || string(f.Payload) != `"ok"` {
			t.Fatalf("a released call: %+v %v", f, err)
		}
	}

	call(200, "hang", time.Now().Add(20*time.Millisecond), nil, nil)
	<-started
	refused(200, fnapi.ErrTimeout)

	// Without an id the call is made and not answered: the next frame is
	// the next call's.
	call(0, "ok", time.Time{}, nil, nil)
	<-started
	call(201, "ok", time.Time{}, nil, nil)
	if got, e := answer(201); got != `"ok"` {
		t.Errorf("call 201: %q %v", got, e)
	}

	// Calls without an id are refused quietly and counted: the next
	// flush says how many, with the first's type and message, and
	// forgets them. One past its deadline counts too.
	call(0, "fail", time.Time{}, nil, nil)
	<-started
	call(0, "fail", time.Time{}, nil, nil)
	<-started
	call(0, "ok", time.Now().Add(-time.Second), nil, nil)
	call(202, fnapi.Flush, time.Time{}, nil, nil)
	if _, e := answer(202); e == nil || !errors.Is(e, fnapi.ErrForbidden) || !strings.Contains(e.Message, "3 of the calls") || !strings.Contains(e.Message, "not this") {
		t.Errorf("the flush after three refusals: %+v", e)
	}
	call(203, fnapi.Flush, time.Time{}, nil, nil)
	if got, e := answer(203); got != "" || e != nil {
		t.Errorf("a flush with nothing refused since the last: %q %+v", got, e)
	}

	call(300, "hang", time.Time{}, nil, nil)
	<-started
	s.close() // returns: the call under way is ended
	s.close()
}
