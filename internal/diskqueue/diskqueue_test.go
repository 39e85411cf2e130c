package diskqueue

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
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

// positionsOf returns where each pending record starts.
func positionsOf(q *Queue) []pos {
	q.mu.Lock()
	defer q.mu.Unlock()
	var ps []pos
	for _, r := range q.pending {
		ps = append(ps, r.pos)
	}
	return ps
}

// damageFile changes the file in place.
func damageFile(t *testing.T, path string, change func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, change(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantPending checks the pending records are want, in order.
func wantPending(t *testing.T, q *Queue, want []int) {
	t.Helper()
	var ws []string
	for _, w := range want {
		ws = append(ws, strconv.Itoa(w))
	}
	if got := pendingData(t, q); !slices.Equal(got, ws) {
		t.Fatalf("pending records %q, want %q", got, ws)
	}
}

func seq(from, to int, except ...int) []int {
	var out []int
	for i := from; i < to; i++ {
		if !slices.Contains(except, i) {
			out = append(out, i)
		}
	}
	return out
}

// A flipped byte costs the record it is in, not the rest of its segment;
// the damage is reported.
func TestFlippedByteCostsOneRecord(t *testing.T) {
	for _, tc := range []struct {
		name  string
		where func(p pos) int64 // the byte to flip, from record 100's start
	}{
		{"in the data", func(p pos) int64 { return p.off + recHdrSize }},
		{"in the length", func(p pos) int64 { return p.off + 1 }},
		{"in the checksum", func(p pos) int64 { return p.off + 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q, _ := Open(dir, Options{})
			appendN(t, q, 0, 200)
			at := tc.where(positionsOf(q)[100])
			q.Close()
			damageFile(t, filepath.Join(dir, segName(0)), func(b []byte) []byte { b[at] ^= 0x40; return b })
			q = mustOpen(t, dir, Options{})
			wantPending(t, q, seq(0, 200, 100))
			st := q.Stats()
			if st.Damaged != 1 || st.DamagedBytes == 0 || st.Truncated != 0 {
				t.Fatalf("stats %+v, want one damaged stretch and nothing truncated", st)
			}
			if d := q.Damage(); len(d) != 1 || !strings.Contains(d[0].String(), segName(0)) {
				t.Fatalf("damage %v, want one stretch naming the segment", d)
			}
			// Appends after the damage are kept across another reopen.
			appendN(t, q, 200, 5)
			q.Close()
			q = mustOpen(t, dir, Options{})
			wantPending(t, q, seq(0, 205, 100))
		})
	}
}

// A stretch of zeros (a filesystem that extended the file but lost the
// data) is not read as records, and costs only what it covers.
func TestZeroedStretch(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, Options{})
	appendN(t, q, 0, 50)
	ps := positionsOf(q)
	q.Close()
	damageFile(t, filepath.Join(dir, segName(0)), func(b []byte) []byte {
		clear(b[ps[10].off:ps[13].off])
		return b
	})
	q = mustOpen(t, dir, Options{})
	wantPending(t, q, seq(0, 50, 10, 11, 12))
	if _, err := q.Append(nil); !errors.Is(err, ErrEmptyRecord) {
		t.Fatalf("empty record: %v, want ErrEmptyRecord", err)
	}
}

// A segment whose header is empty, cut short or damaged (a crash or a full
// disk while it was made) keeps its records, and nothing is appended
// behind it: every record appended afterwards survives the next open.
func TestBadSegmentHeader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(dir string)
	}{
		{"empty new segment", func(dir string) { os.WriteFile(filepath.Join(dir, segName(1)), nil, 0o600) }},
		{"half a header", func(dir string) { os.WriteFile(filepath.Join(dir, segName(1)), []byte("EKQU"), 0o600) }},
		{"flipped header byte", func(dir string) {
			damageFile(t, filepath.Join(dir, segName(0)), func(b []byte) []byte { b[3] ^= 1; return b })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q, _ := Open(dir, Options{})
			appendN(t, q, 0, 5)
			q.Close()
			tc.damage(dir)
			q = mustOpen(t, dir, Options{})
			appendN(t, q, 5, 5)
			q.Close()
			q = mustOpen(t, dir, Options{})
			wantPending(t, q, seq(0, 10))
			drain(t, q, 0, 10)
		})
	}
}

// A segment file deleted from the middle is reported; the records of the
// others are kept.
func TestMissingSegmentReported(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 64}
	q, _ := Open(dir, o)
	appendN(t, q, 0, 60)
	ps := positionsOf(q)
	q.Close()
	gone := ps[30].seg
	if err := os.Remove(filepath.Join(dir, segName(gone))); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir, o)
	var lost []int
	for i, p := range ps {
		if p.seg == gone {
			lost = append(lost, i)
		}
	}
	wantPending(t, q, seq(0, 60, lost...))
	d := q.Damage()
	if len(d) != 1 || d[0].Missing != 1 || d[0].Segment != gone || !strings.Contains(d[0].String(), "missing") {
		t.Fatalf("damage %v, want segment %d missing", d, gone)
	}

	// The first segments, which the head points into, deleted too.
	q.Close()
	for _, p := range ps[:5] {
		os.Remove(filepath.Join(dir, segName(p.seg)))
	}
	q = mustOpen(t, dir, o)
	if d := q.Damage(); len(d) != 2 || d[0].Segment != ps[0].seg {
		t.Fatalf("damage %v, want the first segments and segment %d missing", d, gone)
	}
}

// Segments are deleted only after the head has moved past them, so a
// queue that went through many segments reports nothing missing.
func TestNoFalseMissing(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: 64, Window: 2}
	q, _ := Open(dir, o)
	appendN(t, q, 0, 100)
	drain(t, q, 0, 90)
	// No Close: the head is as a crash leaves it.
	q.mu.Lock()
	q.closeFiles()
	q.closed = true
	q.mu.Unlock()
	q = mustOpen(t, dir, o)
	if d := q.Damage(); len(d) != 0 {
		t.Fatalf("damage %v after a crash, want none", d)
	}
}

// pendingData returns the data of every pending record, in order, without
// acking them (Rewind puts nothing back: the window is left alone).
func pendingData(t testing.TB, q *Queue) []string {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for _, r := range q.pending {
		buf := make([]byte, recHdrSize+r.size)
		if _, err := q.segs[r.seg].ReadAt(buf, r.off); err != nil {
			t.Fatal(err)
		}
		out = append(out, string(buf[recHdrSize:]))
	}
	return out
}

// FuzzSegment feeds arbitrary bytes as a segment file and as a head file:
// parsing never panics, records found lie inside the data and do not
// overlap, and a queue opened on them takes a record that is still there,
// after every record it found, when it is opened again.
func FuzzSegment(f *testing.F) {
	f.Add([]byte(segMagic), []byte{})
	f.Add([]byte(segMagic+"\x01\x00\x00\x00\xa0\x6d\xa4\x28a"), encodeHead(pos{0, 8}, pos{0, 8}))
	f.Add([]byte(segMagic+"\xff\xff\xff\xff"), encodeHead(pos{0, 0}, pos{0, 100}))
	f.Add([]byte("EKQUEUE"), encodeHead(pos{0, 8}, pos{0, 8}))
	f.Add([]byte("XKQUEUE1\x01\x00\x00\x00\xa0\x6d\xa4\x28a\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\xa0\x6d\xa4\x28a"), []byte{})
	f.Fuzz(func(t *testing.T, seg, head []byte) {
		sc := parseSegment(seg, 0)
		if sc.end > int64(len(seg)) {
			t.Fatalf("valid part %d beyond data %d", sc.end, len(seg))
		}
		next := int64(len(segMagic))
		for _, r := range sc.recs {
			if r.off < next || r.off+recHdrSize+int64(r.size) > sc.end {
				t.Fatalf("record %+v overlaps the one before (ending at %d) or lies beyond the valid part %d", r, next, sc.end)
			}
			next = r.off + recHdrSize + int64(r.size)
		}
		decodeHead(head)
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, segName(0)), seg, 0o600)
		os.WriteFile(filepath.Join(dir, "head"), head, 0o600)
		q, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		before := pendingData(t, q)
		if _, err := q.Append([]byte("new")); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		q, err = Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		after := pendingData(t, q)
		if want := append(before, "new"); !slices.Equal(after, want) {
			t.Fatalf("after an append and a reopen the queue holds %q, want %q", after, want)
		}
	})
}
