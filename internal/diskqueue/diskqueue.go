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
// length, a little-endian uint32 CRC-32C of the data, and the data. The head
// file holds "EKH1", the window position and the ack position (segment
// uint64 and offset int64 each, little-endian), and a CRC-32C of those 36
// bytes. A torn record at the end of the last segment (a crash mid-write) is
// cut off at open; a damaged head file means the queue resends from its
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
	// Truncated is how many bytes of torn or damaged records were cut off
	// when the queue was opened.
	Truncated int64
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

	var all []record
	for i, n := range nums {
		f, err := os.OpenFile(filepath.Join(q.dir, segName(n)), os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		q.segs[n] = f
		recs, good, size, err := scanSegment(f, n)
		if err != nil {
			return err
		}
		if good < size {
			// A torn write at the end (or damage): cut it off so appends
			// continue from a clean record boundary.
			q.truncated += size - good
			if err := f.Truncate(good); err != nil {
				return err
			}
			size = good
		}
		all = append(all, recs...)
		if i == len(nums)-1 {
			q.tail, q.tailSize = n, size
		}
	}
	if len(nums) == 0 {
		if err := q.newSegment(0); err != nil {
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
	q.dropSegments()
	return nil
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

// scanSegment reads a segment's records. good is the offset after the last
// valid record; size is the file's size.
func scanSegment(f *os.File, n uint64) (recs []record, good, size int64, err error) {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return nil, 0, 0, err
	}
	recs, good = parseSegment(data, n)
	return recs, good, int64(len(data)), nil
}

// parseSegment returns the valid records of a segment's bytes and where the
// valid part ends. A segment without its magic has no valid part.
func parseSegment(data []byte, n uint64) ([]record, int64) {
	if len(data) < len(segMagic) || !bytes.Equal(data[:len(segMagic)], []byte(segMagic)) {
		return nil, 0
	}
	var recs []record
	off := int64(len(segMagic))
	for {
		rest := data[off:]
		if len(rest) < recHdrSize {
			return recs, off
		}
		size := int64(binary.LittleEndian.Uint32(rest))
		if size > MaxRecordSize || int64(len(rest))-recHdrSize < size {
			return recs, off
		}
		body := rest[recHdrSize : recHdrSize+size]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(rest[4:]) {
			return recs, off
		}
		recs = append(recs, record{pos: pos{n, off}, size: int(size)})
		off += recHdrSize + size
	}
}

func (q *Queue) newSegment(n uint64) error {
	f, err := os.OpenFile(filepath.Join(q.dir, segName(n)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		f.Close()
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
	data := buf[recHdrSize:]
	if crc32.Checksum(data, castagnoli) != binary.LittleEndian.Uint32(buf[4:]) {
		return 0, nil, fmt.Errorf("diskqueue: %w: segment %d offset %d fails its checksum", ErrCorrupt, r.seg, r.off)
	}
	return r.id, data, nil
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
	q.dropSegments()
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
	q.dropSegments()
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
	q.dropSegments()
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

// dropSegments deletes segments wholly before the window start, and starts
// the tail segment afresh when the queue is empty and it has grown.
func (q *Queue) dropSegments() {
	win, _ := q.positions()
	for n, f := range q.segs {
		if n < win.seg {
			f.Close()
			_ = os.Remove(filepath.Join(q.dir, segName(n)))
			delete(q.segs, n)
		}
	}
}

// Stats returns the queue's counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return Stats{Pending: len(q.pending), PendingBytes: q.pendBytes, Window: len(q.window), Segments: len(q.segs), Truncated: q.truncated}
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
