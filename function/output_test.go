package function

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineRecorder keeps the messages and request ids of the records logged.
type lineRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *lineRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *lineRecorder) Handle(_ context.Context, rec slog.Record) error {
	id := ""
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "request_id" {
			id = a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, id+"|"+rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *lineRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *lineRecorder) WithGroup(string) slog.Handler      { return r }

func (r *lineRecorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// TestOutputFence: once a fence is met, every line written before it is
// logged with the request id current then, a line the writer did not end
// is a line of its own, and a line that only looks like a fence (a forged
// token) is output like any other.
func TestOutputFence(t *testing.T) {
	o, err := newOutputPipe("stdout", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	if o.w == nil {
		t.Fatal("no host write end: /proc/self/fd did not reopen the pipe")
	}
	rec := &lineRecorder{}
	var id string
	var idMu sync.Mutex
	current := func() string { idMu.Lock(); defer idMu.Unlock(); return id }
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.lines(slog.New(rec), current, func(string) {})
	}()
	defer func() {
		o.close()
		<-done
	}()

	other, err := newOutputPipe("stderr", slog.LevelWarn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	mark := o.mark()
	if a, b := pending(o, other, mark, other.mark()); a || b {
		t.Fatalf("output pending before any: %v %v", a, b)
	}
	idMu.Lock()
	id = "r1"
	idMu.Unlock()
	forged := "\x00edgekit-fence-" + strings.Repeat("0", 32)
	if _, err := o.child.WriteString("one\n" + forged + "\nno end"); err != nil {
		t.Fatal(err)
	}
	if a, b := pending(o, other, mark, other.mark()); !a || b {
		t.Fatalf("output pending after some on the first pipe: %v %v, want true false", a, b)
	}
	n := o.fence(time.Now().Add(10 * time.Second))
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	if n == 0 || !o.await(n, timer) {
		t.Fatal("the fence was not met")
	}
	want := []string{"r1|one", "r1|" + forged, "r1|no end"}
	if got := rec.got(); !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	if a, _ := pending(o, other, o.mark(), other.mark()); a {
		t.Error("the fence itself counts as output")
	}
}

// TestOutputLongLine: a line over maxLine is logged in pieces, none lost.
func TestOutputLongLine(t *testing.T) {
	o, err := newOutputPipe("stdout", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	rec := &lineRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.lines(slog.New(rec), func() string { return "" }, func(string) {})
	}()
	go func() {
		_, _ = o.child.WriteString(strings.Repeat("x", maxLine+10) + "\nafter\n")
		o.child.Close()
		o.closeWrite()
	}()
	<-done
	o.close()
	total := 0
	got := rec.got()
	for _, m := range got[:len(got)-1] {
		total += len(m) - 1
	}
	if total != maxLine+10 || got[len(got)-1] != "|after" {
		t.Errorf("%d records holding %d bytes, last %q; want %d bytes then after", len(got), total, got[len(got)-1], maxLine+10)
	}
}

// BenchmarkOutputSettleQuiet: what an invocation that wrote nothing pays
// for the output fence (one poll of both pipes).
func BenchmarkOutputSettleQuiet(b *testing.B) {
	o, err := newOutputPipe("stdout", slog.LevelInfo)
	if err != nil {
		b.Fatal(err)
	}
	defer o.close()
	e, err := newOutputPipe("stderr", slog.LevelWarn)
	if err != nil {
		b.Fatal(err)
	}
	defer e.close()
	mo, me := o.mark(), e.mark()
	for b.Loop() {
		if x, y := pending(o, e, mo, me); x || y {
			b.Fatal("pending")
		}
	}
}
