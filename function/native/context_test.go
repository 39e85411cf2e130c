package native

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestInvocationContext: the handler's context ends at the deadline (a
// timer armed only when Done is asked for), or with Canceled when the
// handler returns, and carries the metadata, decoded on demand and still
// there after the frame's buffer is reused.
func TestInvocationContext(t *testing.T) {
	conn := context.WithValue(context.Background(), connKey{}, "conn")
	meta := []byte(`{"requestId":"r-1","function":"f","version":"2","source":{"type":"timer"}}`)
	f := &Frame{Deadline: time.Now().Add(300 * time.Millisecond).UnixMilli(), Meta: meta}
	ctx := newInvocationCtx(conn, f)
	copy(meta, "xxxxxxxxxxxx") // the reader reuses its buffer
	if inv, ok := FromContext(ctx); !ok || inv.RequestID != "r-1" || inv.Version != "2" || inv.Source["type"] != "timer" {
		t.Errorf("FromContext: %+v %v", inv, ok)
	}
	if ctx.Value(connKey{}) != "conn" {
		t.Error("the connection is not carried")
	}
	if d, ok := ctx.Deadline(); !ok || d.UnixMilli() != f.Deadline {
		t.Errorf("Deadline %v %v", d, ok)
	}
	if ctx.Err() != nil {
		t.Fatalf("Err before the deadline: %v", ctx.Err())
	}
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err at the deadline: %v", ctx.Err())
	}
	ctx.cancel(context.Canceled)
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err after the end: %v, want the deadline's still", ctx.Err())
	}

	// Ended by the handler returning, before anyone asked for Done.
	ctx = newInvocationCtx(conn, &Frame{Deadline: time.Now().Add(time.Hour).UnixMilli(), Meta: meta})
	ctx.cancel(context.Canceled)
	select {
	case <-ctx.Done():
	default:
		t.Error("Done not closed after the end")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err after the end: %v", ctx.Err())
	}
	// A context derived from it ends with it.
	ctx = newInvocationCtx(conn, &Frame{Deadline: time.Now().Add(time.Hour).UnixMilli()})
	child, stop := context.WithCancel(ctx)
	defer stop()
	ctx.cancel(context.Canceled)
	<-child.Done()
}
