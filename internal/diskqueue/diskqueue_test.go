package diskqueue

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func mustOpen(t *testing.T, dir string, o Options) *Queue {
	t.Helper()
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func appendN(t *testing.T, q *Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := q.Append([]byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
	}
}

// drain reads, checks and acks up to n records, expecting from, from+1, ...
func drain(t *testing.T, q *Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		_, got, err := q.Front()
		if err != nil {
			t.Fatalf("Front at %d: %v", i, err)
		}
		if string(got) != strconv.Itoa(i) {
			t.Fatalf("Front = %q, want %d", got, i)
		}
		if err := q.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFIFOAcrossReopenAndSegments(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 64, Window: 3}
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 0, 100)
	drain(t, q, 0, 40)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	q = mustOpen(t, dir, o)
	st := q.Stats()
	if st.Pending != 60 || st.Window != 3 {
		t.Fatalf("after reopen: %+v, want 60 pending and a window of 3", st)
	}
	if st.Segments > 40 {
		t.Errorf("%d segments kept; acked ones should be deleted", st.Segments)
	}
	if err := q.Rewind(); err != nil {
		t.Fatal(err)
	}
	drain(t, q, 37, 63) // the window (37..39) again, then the rest
	if _, _, err := q.Front(); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Front on empty: %v", err)
	}
}

func TestBounds(t *testing.T) {
	q := mustOpen(t, t.TempDir(), Options{MaxRecords: 3, MaxBytes: 10})
	appendN(t, q, 0, 3)
	if _, err := q.Append([]byte("x")); !errors.Is(err, ErrFull) || !contains(err, "bound 3") {
		t.Fatalf("4th record: %v, want ErrFull naming the bound", err)
	}
	drain(t, q, 0, 1)
	if _, err := q.Append([]byte("123456789")); !errors.Is(err, ErrFull) || !contains(err, "bound 10") {
		t.Fatalf("over bytes: %v", err)
	}
	if _, err := q.Append(make([]byte, 11)); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversize record: %v", err)
	}
	// Nothing accepted was lost by the refusals.
	drain(t, q, 1, 2)
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

func TestTornWriteIsCutOff(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, Options{})
	appendN(t, q, 0, 5)
	q.Close()
	seg := filepath.Join(dir, segName(0))
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2}) // half a header and no data
	f.Close()
	q = mustOpen(t, dir, Options{})
	if st := q.Stats(); st.Pending != 5 || st.Truncated != 6 {
		t.Fatalf("after torn write: %+v", st)
	}
	appendN(t, q, 5, 1)
	drain(t, q, 0, 6)
}

func TestDamagedHeadResendsFromOldest(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, Options{})
	appendN(t, q, 0, 4)
	drain(t, q, 0, 2)
	q.Close()
	os.WriteFile(filepath.Join(dir, "head"), []byte("garbage"), 0o600)
	q = mustOpen(t, dir, Options{})
	drain(t, q, 0, 4) // duplicates, never loss
}

func TestDropAndForget(t *testing.T) {
	q := mustOpen(t, t.TempDir(), Options{})
	appendN(t, q, 0, 3)
	drain(t, q, 0, 1)
	if err := q.Drop(); err != nil { // drops 1
		t.Fatal(err)
	}
	if err := q.Rewind(); err != nil {
		t.Fatal(err)
	}
	drain(t, q, 2, 1)
	if err := q.ForgetWindow(); err != nil {
		t.Fatal(err)
	}
	if err := q.Rewind(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.Front(); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after ForgetWindow and Rewind: %v", err)
	}
}

func TestDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open of %s: %v, want ErrLocked naming the directory", dir, err)
	}
	q.Close()
	q2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	q2.Close()
}

func BenchmarkAppendFrontAck(b *testing.B) {
	q, _ := Open(b.TempDir(), Options{})
	defer q.Close()
	rec := make([]byte, 100)
	for b.Loop() {
		if _, err := q.Append(rec); err != nil {
			b.Fatal(err)
		}
		if _, _, err := q.Front(); err != nil {
			b.Fatal(err)
		}
		if err := q.Ack(); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzSegment feeds arbitrary bytes as a segment file and as a head file:
// parsing never panics, records found lie inside the data, and a queue
// opened on them works.
func FuzzSegment(f *testing.F) {
	f.Add([]byte(segMagic), []byte{})
	f.Add([]byte(segMagic+"\x01\x00\x00\x00\xa0\x6d\xa4\x28a"), encodeHead(pos{0, 8}, pos{0, 8}))
	f.Add([]byte(segMagic+"\xff\xff\xff\xff"), encodeHead(pos{0, 0}, pos{0, 100}))
	f.Fuzz(func(t *testing.T, seg, head []byte) {
		recs, good := parseSegment(seg, 0)
		if good > int64(len(seg)) {
			t.Fatalf("valid part %d beyond data %d", good, len(seg))
		}
		for _, r := range recs {
			if r.off+recHdrSize+int64(r.size) > good {
				t.Fatalf("record %+v beyond the valid part %d", r, good)
			}
		}
		decodeHead(head)
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, segName(0)), seg, 0o600)
		os.WriteFile(filepath.Join(dir, "head"), head, 0o600)
		q, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		if _, err := q.Append([]byte("new")); err != nil {
			t.Fatal(err)
		}
		var last []byte
		for {
			_, rec, err := q.Front()
			if errors.Is(err, ErrEmpty) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			last = rec
			q.Ack()
		}
		if string(last) != "new" {
			t.Fatalf("last record %q, want the appended one", last)
		}
	})
}
