// Package diskqueue is a bounded, persistent FIFO of byte records: the
// store-and-forward queue behind mqttbus. Records are appended to segment
// files; a consumer reads the first pending record, sends it, and acks it.
// Acked records stay in a small resend window so that, after a broker crash
// that lost what it had acknowledged, the consumer can Rewind and send them
// again (duplicates, never loss). Positions are saved in a head file, so the
// queue reopens where it was after a process restart.
//
// # On-disk format
//
// Segment files are named %016x.seg (the segment number). Each starts with
// the 8 bytes "EKQUEUE1", followed by records: a little-endian uint32
// length (at least 1), a little-endian uint32 CRC-32C of the data, and the
// data. The head file holds "EKH1", the window position and the ack
// position (segment uint64 and offset int64 each, little-endian), and a
// CRC-32C of those 36 bytes.
//
// # Damage
//
// A damaged record costs that record only. Open reads every segment record
// by record; where a record fails its checks it looks for the next valid
// one byte by byte (a false match needs a length that fits and a CRC-32C
// that matches: about one in 2^32 per position) and goes on from there.
// Only a torn tail, bytes after the last valid record of the last segment
// (a crash mid-write), is cut off. A segment whose header is damaged keeps
// the records it holds, but nothing is appended to it: appends go to a new
// segment. A segment file missing between others, or one the head points
// into, is reported, as is each damaged stretch ([Queue.Damage],
// [Stats.Damaged]). A damaged head file means the queue resends from its
// oldest record.
//
// A Queue is safe for concurrent use.
package diskqueue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentinel errors.
var (
	ErrFull    = errors.New("queue full")
	ErrEmpty   = errors.New("queue empty")
	ErrClosed  = errors.New("queue closed")
	ErrTooBig  = errors.New("record larger than the queue's byte bound")
	ErrCorrupt = errors.New("queue file corrupt")
	// ErrEmptyRecord refuses a record of no bytes: the format has none, so
	// that a stretch of zeros is never read as records.
	ErrEmptyRecord = errors.New("empty record")
	// ErrLocked means another open queue (in this or another process)
	// holds the directory.
	ErrLocked = errors.New("queue directory in use by another queue")
)

const (
	segMagic   = "EKQUEUE1"
	headMagic  = "EKH1"
	headSize   = 4 + 4*8 + 4
	recHdrSize = 8
	// MaxRecordSize bounds one record (MQTT's largest packet).
	MaxRecordSize = 268435455
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options bound and tune a Queue. Zero values mean the defaults.
type Options struct {
	// MaxRecords bounds the pending records; default 100,000.
	MaxRecords int
	// MaxBytes bounds the pending records' data; default 64 MiB.
	MaxBytes int64
	// Window is how many acked records are kept for Rewind; default 1,000.
	// A negative value keeps none.
	Window int
	// SegmentBytes is the size at which a new segment file starts; default
	// 4 MiB.
	SegmentBytes int64
	// Sync calls fsync after every append and ack, so that a power loss
	// loses nothing; without it a process crash loses nothing but a power
	// loss may lose the last seconds.
	Sync bool
}

func (o *Options) defaults() {
	if o.MaxRecords <= 0 {
		o.MaxRecords = 100_000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.Window == 0 {
		o.Window = 1000
	}
	if o.Window < 0 {
		o.Window = 0
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 4 << 20
	}
}

// pos is where a record starts.
type pos struct {
	seg uint64
	off int64
}

type record struct {
	pos
	size int    // data bytes
	id   uint64 // in-memory identity, from Append or Open
}

// Stats describes the queue.
type Stats struct {
	Pending      int   // records not yet acked
	PendingBytes int64 // their data bytes
	Window       int   // acked records kept for Rewind
	Segments     int   // segment files
	// Truncated is how many bytes of a torn tail were cut off when the
	// queue was opened.
	Truncated int64
	// Damaged is how many damaged stretches and missing segment files
	// Open found (each cost the records it held; Damage says where).
	Damaged int
	// DamagedBytes is the size of the damaged stretches.
	DamagedBytes int64
}

// Damage is one damaged stretch of a segment, or a missing segment file,
// found when the queue was opened. The records it held are lost; every
// intact record around it is kept.
type Damage struct {
	Segment uint64 // segment number (the first missing one, for Missing)
	Offset  int64  // where the stretch starts
	Bytes   int64  // its length
	// Missing counts segment files that should exist and do not
	// (Segment, Segment+1, ...); Offset and Bytes are then 0.
	Missing int
}

func (d Damage) String() string {
	if d.Missing > 0 {
		return fmt.Sprintf("%d segment file(s) missing from %s", d.Missing, segName(d.Segment))
	}
	return fmt.Sprintf("%s: %d damaged bytes at offset %d skipped", segName(d.Segment), d.Bytes, d.Offset)
}

// Queue is a persistent FIFO. See the package doc.
type Queue struct {
	dir  string
	opts Options

	mu        sync.Mutex
	closed    bool
	window    []record // acked, oldest first
	pending   []record // not acked, oldest first
	pendBytes int64
	segs      map[uint64]*os.File
	tail      uint64 // segment appended to
	tailSize  int64
	head      *os.File
	lock      *os.File
	truncated int64
	damage    []Damage
	nextID    uint64
	headAt    time.Time // last head write
}

// headEvery bounds how often Ack writes the head file. A crash loses at
// most this much of ack progress: those records are sent again (duplicates,
// never loss).
const headEvery = 50 * time.Millisecond

// Open opens (or creates) the queue in dir.
func Open(dir string, opts Options) (*Queue, error) {
	opts.defaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("diskqueue: %w", err)
	}
	q := &Queue{dir: dir, opts: opts, segs: map[uint64]*os.File{}}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("diskqueue: opening %s: %w", dir, err)
	}
	q.lock = lock
	if err := q.load(); err != nil {
		q.closeFiles()
		return nil, fmt.Errorf("diskqueue: opening %s: %w", dir, err)
	}
	return q, nil
}

func segName(n uint64) string { return fmt.Sprintf("%016x.seg", n) }

func (q *Queue) load() error {
	names, err := filepath.Glob(filepath.Join(q.dir, "*.seg"))
	if err != nil {
		return err
	}
	var nums []uint64
	for _, n := range names {
		v, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".seg"), 16, 64)
		if err != nil {
			continue // not ours
		}
		nums = append(nums, v)
	}
	slices.Sort(nums)

	head, err := os.OpenFile(filepath.Join(q.dir, "head"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	q.head = head
	win, ack, headOK := readHead(head)
	if headOK {
		q.findMissing(nums, win, ack)
	}

	var all []record
	tailHeaderOK := false
	for i, n := range nums {
		f, err := os.OpenFile(filepath.Join(q.dir, segName(n)), os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		q.segs[n] = f
		data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
		if err != nil {
			return fmt.Errorf("reading %s: %w", segName(n), err)
		}
		sc := parseSegment(data, n)
		q.damage = append(q.damage, sc.damaged...)
		size := int64(len(data))
		last := i == len(nums)-1
		if last && sc.end < size {
			// A torn write at the end: cut it off so that appends continue
			// from a clean record boundary. Only here, where appends go.
			q.truncated += size - sc.end
			if err := f.Truncate(sc.end); err != nil {
				return err
			}
			size = sc.end
		} else if sc.end < size {
			q.damage = append(q.damage, Damage{Segment: n, Offset: sc.end, Bytes: size - sc.end})
		}
		all = append(all, sc.recs...)
		if last {
			q.tail, q.tailSize, tailHeaderOK = n, size, sc.headerOK
		}
	}
	if !tailHeaderOK {
		// No segment yet, or the last one's header is damaged (a crash or a
		// full disk while it was made): never append behind a bad header.
		next := uint64(0)
		if len(nums) > 0 {
			next = q.tail + 1
		}
		if err := q.newSegment(next); err != nil {
			return err
		}
	}
	if !headOK && len(all) > 0 {
		win, ack = all[0].pos, all[0].pos
	}
	for _, r := range all {
		q.nextID++
		r.id = q.nextID
		switch {
		case less(r.pos, win):
			// Before the window: already done.
		case less(r.pos, ack):
			q.window = append(q.window, r)
		default:
			q.pending = append(q.pending, r)
			q.pendBytes += int64(r.size)
		}
	}
	q.trimWindow()
	return q.dropSegments()
}

// findMissing records the segment files that should exist and do not: gaps
// between the segments found, and the segments from the head's window
// start (which the queue keeps until the window has passed them) up to the
// first one found.
func (q *Queue) findMissing(nums []uint64, win, ack pos) {
	miss := func(from, to uint64) { // [from, to)
		if to > from {
			q.damage = append(q.damage, Damage{Segment: from, Missing: int(min(to-from, 1<<30))})
		}
	}
	if len(nums) == 0 {
		miss(win.seg, ack.seg+1)
		return
	}
	if win.seg < nums[0] {
		miss(win.seg, nums[0])
	}
	for i := 1; i < len(nums); i++ {
		miss(nums[i-1]+1, nums[i])
	}
	if last := nums[len(nums)-1]; ack.seg > last {
		miss(last+1, ack.seg+1)
	}
}

func less(a, b pos) bool { return a.seg < b.seg || (a.seg == b.seg && a.off < b.off) }

func readHead(f *os.File) (win, ack pos, ok bool) {
	var b [headSize]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return pos{}, pos{}, false
	}
	return decodeHead(b[:])
}

func decodeHead(b []byte) (win, ack pos, ok bool) {
	if len(b) < headSize || string(b[:4]) != headMagic {
		return pos{}, pos{}, false
	}
	if crc32.Checksum(b[:headSize-4], castagnoli) != binary.LittleEndian.Uint32(b[headSize-4:]) {
		return pos{}, pos{}, false
	}
	le := binary.LittleEndian
	win = pos{le.Uint64(b[4:]), int64(le.Uint64(b[12:]))}
	ack = pos{le.Uint64(b[20:]), int64(le.Uint64(b[28:]))}
	if win.off < 0 || ack.off < 0 || less(ack, win) {
		return pos{}, pos{}, false
	}
	return win, ack, true
}

func encodeHead(win, ack pos) []byte {
	b := make([]byte, headSize)
	copy(b, headMagic)
	le := binary.LittleEndian
	le.PutUint64(b[4:], win.seg)
	le.PutUint64(b[12:], uint64(win.off))
	le.PutUint64(b[20:], ack.seg)
	le.PutUint64(b[28:], uint64(ack.off))
	le.PutUint32(b[headSize-4:], crc32.Checksum(b[:headSize-4], castagnoli))
	return b
}

// segmentScan is what parseSegment found in one segment's bytes.
type segmentScan struct {
	recs     []record
	headerOK bool
	// end is the offset after the last valid record (after the header
	// when there is none); what follows is a torn tail or damage.
	end     int64
	damaged []Damage // stretches skipped between valid records
}

// parseSegment returns the valid records of a segment's bytes. Where a
// record fails its checks it resynchronises on the next valid record, so
// that damage costs only the records it touched.
func parseSegment(data []byte, n uint64) segmentScan {
	sc := segmentScan{headerOK: len(data) >= len(segMagic) && bytes.Equal(data[:len(segMagic)], []byte(segMagic))}
	if len(data) < len(segMagic) {
		return sc
	}
	if !sc.headerOK {
		sc.damaged = append(sc.damaged, Damage{Segment: n, Offset: 0, Bytes: int64(len(segMagic))})
	}
	off := int64(len(segMagic))
	sc.end = off
	for int64(len(data))-off >= recHdrSize {
		size, ok := recordAt(data[off:])
		if !ok {
			off++
			continue
		}
		if off > sc.end {
			sc.damaged = append(sc.damaged, Damage{Segment: n, Offset: sc.end, Bytes: off - sc.end})
		}
		sc.recs = append(sc.recs, record{pos: pos{n, off}, size: int(size)})
		off += recHdrSize + size
		sc.end = off
	}
	return sc
}

// recordAt reports whether b starts with a valid record, and its data size.
func recordAt(b []byte) (int64, bool) {
	size := int64(binary.LittleEndian.Uint32(b))
	if size == 0 || size > MaxRecordSize || int64(len(b))-recHdrSize < size {
		return 0, false
	}
	return size, crc32.Checksum(b[recHdrSize:recHdrSize+size], castagnoli) == binary.LittleEndian.Uint32(b[4:])
}

func (q *Queue) newSegment(n uint64) error {
	f, err := os.OpenFile(filepath.Join(q.dir, segName(n)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		// A segment without its header is never left to append to.
		f.Close()
		_ = os.Remove(filepath.Join(q.dir, segName(n)))
		return err
	}
	q.segs[n] = f
	q.tail, q.tailSize = n, int64(len(segMagic))
	return nil
}

// Append adds a record at the end and returns its ID (in-memory, unique
// while the queue is open). It returns ErrFull (wrapped, naming the bound)
// when the pending records would exceed MaxRecords or MaxBytes; the queue is
// then unchanged.
func (q *Queue) Append(data []byte) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, ErrClosed
	}
	size := int64(len(data))
	if size == 0 {
		return 0, fmt.Errorf("diskqueue: append: %w", ErrEmptyRecord)
	}
	if size > q.opts.MaxBytes || size > MaxRecordSize {
		return 0, fmt.Errorf("diskqueue: %w: %d bytes, bound %d", ErrTooBig, size, min(q.opts.MaxBytes, MaxRecordSize))
	}
	if len(q.pending) >= q.opts.MaxRecords {
		return 0, fmt.Errorf("diskqueue: %w: %d records pending, bound %d", ErrFull, len(q.pending), q.opts.MaxRecords)
	}
	if q.pendBytes+size > q.opts.MaxBytes {
		return 0, fmt.Errorf("diskqueue: %w: %d bytes pending + %d, bound %d", ErrFull, q.pendBytes, size, q.opts.MaxBytes)
	}
	if q.tailSize >= q.opts.SegmentBytes {
		if err := q.newSegment(q.tail + 1); err != nil {
			return 0, fmt.Errorf("diskqueue: new segment: %w", err)
		}
	}
	f := q.segs[q.tail]
	buf := make([]byte, recHdrSize+len(data))
	binary.LittleEndian.PutUint32(buf, uint32(size))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(data, castagnoli))
	copy(buf[recHdrSize:], data)
	if _, err := f.WriteAt(buf, q.tailSize); err != nil {
		// Cut off whatever part was written; the queue stays as it was.
		_ = f.Truncate(q.tailSize)
		return 0, fmt.Errorf("diskqueue: append: %w", err)
	}
	if q.opts.Sync {
		if err := f.Sync(); err != nil {
			_ = f.Truncate(q.tailSize)
			return 0, fmt.Errorf("diskqueue: append: fsync: %w", err)
		}
	}
	q.nextID++
	q.pending = append(q.pending, record{pos: pos{q.tail, q.tailSize}, size: len(data), id: q.nextID})
	q.pendBytes += size
	q.tailSize += int64(len(buf))
	return q.nextID, nil
}

// frontLocked returns the first pending record; q.mu is held.
func (q *Queue) frontLocked() (record, error) {
	if q.closed {
		return record{}, ErrClosed
	}
	if len(q.pending) == 0 {
		return record{}, ErrEmpty
	}
	return q.pending[0], nil
}

// popLocked removes the first pending record; q.mu is held.
func (q *Queue) popLocked() (record, error) {
	r, err := q.frontLocked()
	if err != nil {
		return r, err
	}
	q.pending = q.pending[1:]
	q.pendBytes -= int64(r.size)
	return r, nil
}

// Front returns the ID and a copy of the first pending record, or ErrEmpty.
func (q *Queue) Front() (uint64, []byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r, err := q.frontLocked()
	if err != nil {
		return 0, nil, err
	}
	buf := make([]byte, recHdrSize+r.size)
	if _, err := q.segs[r.seg].ReadAt(buf, r.off); err != nil {
		return 0, nil, fmt.Errorf("diskqueue: reading segment %d at %d: %w", r.seg, r.off, err)
	}
	if _, ok := recordAt(buf); !ok {
		return 0, nil, fmt.Errorf("diskqueue: %w: segment %d offset %d fails its checksum", ErrCorrupt, r.seg, r.off)
	}
	return r.id, buf[recHdrSize:], nil
}

// Ack marks the first pending record as sent. It moves into the resend
// window.
func (q *Queue) Ack() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	r, err := q.popLocked()
	if err != nil {
		return err
	}
	q.window = append(q.window, r)
	q.trimWindow()
	if err := q.dropSegments(); err != nil {
		return err
	}
	if time.Since(q.headAt) < headEvery && !q.opts.Sync {
		return nil // Close and the next Ack after headEvery write it
	}
	return q.writeHead()
}

// FrontID returns the ID of the first pending record, or ErrEmpty.
func (q *Queue) FrontID() (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r, err := q.frontLocked()
	return r.id, err
}

// Drop removes the first pending record without keeping it in the window
// (for a record the far side refused for good).
func (q *Queue) Drop() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, err := q.popLocked(); err != nil {
		return err
	}
	q.window = nil // the window must stay contiguous before the ack point
	if err := q.dropSegments(); err != nil {
		return err
	}
	return q.writeHead()
}

// Rewind moves the resend window back in front of the pending records, so
// that they are sent again.
func (q *Queue) Rewind() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	if len(q.window) == 0 {
		return nil
	}
	for _, r := range q.window {
		q.pendBytes += int64(r.size)
	}
	q.pending = append(q.window, q.pending...)
	q.window = nil
	return q.writeHead()
}

// ForgetWindow drops the resend window: what the far side acknowledged will
// not be sent again.
func (q *Queue) ForgetWindow() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.window = nil
	if err := q.dropSegments(); err != nil {
		return err
	}
	return q.writeHead()
}

// trimWindow keeps the last Window records. Reslicing (no copy) keeps an
// Ack O(1); append reallocates the backing array as it fills.
func (q *Queue) trimWindow() {
	if over := len(q.window) - q.opts.Window; over > 0 {
		q.window = q.window[over:]
	}
}

// positions returns the window start and ack point.
func (q *Queue) positions() (win, ack pos) {
	switch {
	case len(q.pending) > 0:
		ack = q.pending[0].pos
	default:
		ack = pos{q.tail, q.tailSize}
	}
	win = ack
	if len(q.window) > 0 {
		win = q.window[0].pos
	}
	return win, ack
}

func (q *Queue) writeHead() error {
	win, ack := q.positions()
	if _, err := q.head.WriteAt(encodeHead(win, ack), 0); err != nil {
		return fmt.Errorf("diskqueue: writing head: %w", err)
	}
	q.headAt = time.Now()
	if q.opts.Sync {
		if err := q.head.Sync(); err != nil {
			return fmt.Errorf("diskqueue: fsync head: %w", err)
		}
	}
	return nil
}

// dropSegments deletes segments wholly before the window start. The head
// is written first, so that it never points into a segment that is gone
// (Open reports such a segment as missing).
func (q *Queue) dropSegments() error {
	win, _ := q.positions()
	var old []uint64
	for n := range q.segs {
		if n < win.seg {
			old = append(old, n)
		}
	}
	if len(old) == 0 {
		return nil
	}
	if err := q.writeHead(); err != nil {
		return err
	}
	for _, n := range old {
		q.segs[n].Close()
		_ = os.Remove(filepath.Join(q.dir, segName(n)))
		delete(q.segs, n)
	}
	return nil
}

// Stats returns the queue's counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := Stats{Pending: len(q.pending), PendingBytes: q.pendBytes, Window: len(q.window), Segments: len(q.segs), Truncated: q.truncated, Damaged: len(q.damage)}
	for _, d := range q.damage {
		st.DamagedBytes += d.Bytes
	}
	return st
}

// Damage lists the damaged stretches and missing segment files Open found,
// in segment order.
func (q *Queue) Damage() []Damage {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.damage)
}

// Close saves the positions and closes the files. It is safe to call more
// than once.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	err := q.writeHead()
	if serr := q.head.Sync(); err == nil {
		err = serr
	}
	return errors.Join(err, q.closeFiles())
}

func (q *Queue) closeFiles() error {
	var errs []error
	for _, f := range q.segs {
		errs = append(errs, f.Close())
	}
	if q.head != nil {
		errs = append(errs, q.head.Close())
	}
	errs = append(errs, q.lock.Close()) // releases the flock
	return errors.Join(errs...)
}
