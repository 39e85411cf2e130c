package native

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"testing"
)

// TestPipeOrder: frames queued from several goroutines and sent between
// them reach the host whole and in each sender's order, more than
// maxQueued of them while the host reads slowly (queue waits, nothing is
// lost), and a frame sent goes out after every frame queued before it.
func TestPipeOrder(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	p := newPipe(w)
	const senders, each = 4, 5000 // ~100 bytes a frame: 2 MB, eight times maxQueued
	payload := make([]byte, 80)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				f := &Frame{Type: FrameCall, Name: fmt.Sprint(s), Seq: uint64(i), Payload: payload}
				if i%1000 == 999 {
					p.send(f)
				} else {
					p.queue(f)
				}
			}
		}()
	}
	br := bufio.NewReaderSize(r, 4096) // the host reads a little at a time
	var buf []byte
	next := make([]uint64, senders)
	for range senders * each {
		f, err := ReadFrame(br, &buf)
		if err != nil {
			t.Fatal(err)
		}
		var s int
		if _, err := fmt.Sscan(f.Name, &s); err != nil || s >= senders || f.Seq != next[s] || len(f.Payload) != len(payload) {
			t.Fatalf("frame %q %d (%d bytes), want sender %q's %d", f.Name, f.Seq, len(f.Payload), f.Name, next[min(s, senders-1)])
		}
		next[s]++
	}
	wg.Wait()
	// A frame sent after frames queued follows them.
	p.queue(&Frame{Type: FrameLog, Payload: []byte("queued")})
	p.send(&Frame{Type: FrameLog, Payload: []byte("sent")})
	for _, want := range []string{"queued", "sent"} {
		f, err := ReadFrame(br, &buf)
		if err != nil || string(f.Payload) != want {
			t.Fatalf("got %+v %v, want %q", f, err, want)
		}
	}
}
