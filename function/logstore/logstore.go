// Package logstore keeps functions' log records on disk and answers
// queries: by function, time range, level, request id and substring,
// newest first. Each function's log is a few segment files of JSON lines,
// rotated to stay under a byte bound, so a chatty function cannot fill the
// gateway's storage or push out another function's records.
//
// Handler wraps a slog.Handler: every record that carries a "function"
// attribute (as the function host's records do) is also stored. A Store is
// safe for concurrent use.
//
// Appends are buffered: a record reaches its file within FlushDelay, when
// the buffer fills, or before a Query or Close sees the file. A crash of
// the process loses at most the last FlushDelay of records; a write per
// record would cost more than the invocation it describes.
package logstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Record is one stored log record.
type Record struct {
	Time      time.Time         `json:"time"`
	Level     slog.Level        `json:"level"`
	Message   string            `json:"msg"`
	Function  string            `json:"function"`
	Version   string            `json:"version,omitempty"`
	Instance  string            `json:"instance,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
}

// Options bound a Store. Zero values mean the defaults.
type Options struct {
	// MaxBytes bounds each function's log on disk; default 8 MiB. The
	// oldest segment goes when a new one would pass it.
	MaxBytes int64
	// Segments is how many files a function's log is split into; default 4.
	Segments int
	// FlushDelay bounds how long an appended record may wait in memory;
	// default 50 ms.
	FlushDelay time.Duration
}

// flushAt is how many buffered bytes make an append write at once.
const flushAt = 32 << 10

// Store holds functions' logs under a directory.
type Store struct {
	dir  string
	opts Options

	mu      sync.Mutex
	logs    map[string]*fnLog
	pending *time.Timer // flushes the buffers; nil when they are empty
	closed  bool
}

type fnLog struct {
	dir  string
	seq  uint64 // current segment
	f    *os.File
	size int64  // on disk and buffered
	buf  []byte // appended, not yet written
}

// Open opens (or creates) a store in dir.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 8 << 20
	}
	if o.Segments <= 1 {
		o.Segments = 4
	}
	if o.FlushDelay <= 0 {
		o.FlushDelay = 50 * time.Millisecond
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	return &Store{dir: dir, opts: o, logs: make(map[string]*fnLog)}, nil
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`+"\x00")
}

// segments lists a function's segment numbers, oldest first.
func segments(dir string) []uint64 {
	ents, _ := os.ReadDir(dir)
	var out []uint64
	for _, e := range ents {
		if n, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".log"), 16, 64); err == nil && strings.HasSuffix(e.Name(), ".log") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func segPath(dir string, n uint64) string { return filepath.Join(dir, fmt.Sprintf("%016x.log", n)) }

// Append stores r.
func (s *Store) Append(r Record) error {
	if !validName(r.Function) {
		return fmt.Errorf("logstore: record without a valid function name (%q)", r.Function)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("logstore: append to %s: %w", r.Function, os.ErrClosed)
	}
	l, err := s.open(r.Function)
	if err != nil {
		return err
	}
	segMax := s.opts.MaxBytes / int64(s.opts.Segments)
	n := len(l.buf)
	l.buf = append(appendRecord(l.buf, &r), '\n')
	size := int64(len(l.buf) - n)
	if l.size > 0 && l.size+size > segMax {
		line := bytes.Clone(l.buf[n:])
		l.buf = l.buf[:n]
		if err := s.rotate(l); err != nil {
			return err
		}
		l.buf = append(l.buf, line...)
	}
	l.size += size
	if len(l.buf) >= flushAt {
		return l.flush()
	}
	if s.pending == nil {
		s.pending = time.AfterFunc(s.opts.FlushDelay, s.flushAll)
	}
	return nil
}

// flush writes l's buffer; s.mu is held.
func (l *fnLog) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.f.Write(l.buf)
	l.buf = l.buf[:0]
	if err != nil {
		return fmt.Errorf("logstore: %s: %w", filepath.Base(l.dir), err)
	}
	return nil
}

// flushAll writes every buffer (the pending timer's function).
func (s *Store) flushAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.flushAllLocked()
}

func (s *Store) flushAllLocked() error {
	if s.pending != nil {
		s.pending.Stop()
		s.pending = nil
	}
	var errs []error
	for _, l := range s.logs {
		errs = append(errs, l.flush())
	}
	return errors.Join(errs...)
}

func (s *Store) open(function string) (*fnLog, error) {
	if l := s.logs[function]; l != nil {
		return l, nil
	}
	dir := filepath.Join(s.dir, function)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	l := &fnLog{dir: dir}
	if segs := segments(dir); len(segs) > 0 {
		l.seq = segs[len(segs)-1]
	}
	f, err := openSegment(segPath(dir, l.seq))
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	st, _ := f.Stat()
	l.f, l.size = f, st.Size()
	s.logs[function] = l
	return l, nil
}

// openSegment opens a segment for appending: readable by the owner only
// (functions log what they handle), and never through a link planted in
// its place.
func openSegment(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
}

// rotate starts a new segment and drops the oldest ones over the bound.
func (s *Store) rotate(l *fnLog) error {
	if err := l.flush(); err != nil {
		return err
	}
	l.f.Close()
	l.seq++
	f, err := openSegment(segPath(l.dir, l.seq))
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	l.f, l.size = f, 0
	segs := segments(l.dir)
	for len(segs) > s.opts.Segments {
		_ = os.Remove(segPath(l.dir, segs[0]))
		segs = segs[1:]
	}
	return nil
}

// Query selects records. Function is required; zero fields do not filter.
type Query struct {
	Function  string
	From, To  time.Time
	MinLevel  slog.Level
	RequestID string
	// Contains matches the message or any attribute value.
	Contains string
	// Limit bounds the answer; default 100.
	Limit int
}

// Query returns the matching records, newest first.
func (s *Store) Query(q Query) ([]Record, error) {
	if !validName(q.Function) {
		return nil, fmt.Errorf("logstore: query needs a valid function name, not %q", q.Function)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	dir := filepath.Join(s.dir, q.Function)
	s.mu.Lock()
	var flushErr error
	if l := s.logs[q.Function]; l != nil {
		flushErr = l.flush()
	}
	segs := segments(dir)
	s.mu.Unlock()
	if flushErr != nil {
		return nil, flushErr
	}
	var out []Record
	for i := len(segs) - 1; i >= 0 && len(out) < q.Limit; i-- {
		data, err := os.ReadFile(segPath(dir, segs[i]))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated away meanwhile
			}
			return nil, fmt.Errorf("logstore: %w", err)
		}
		lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
		for j := len(lines) - 1; j >= 0 && len(out) < q.Limit; j-- {
			var r Record
			if json.Unmarshal(lines[j], &r) != nil {
				continue // a torn last line after a crash
			}
			if q.matches(&r) {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func (q *Query) matches(r *Record) bool {
	if !q.From.IsZero() && r.Time.Before(q.From) || !q.To.IsZero() && r.Time.After(q.To) {
		return false
	}
	if r.Level < q.MinLevel || q.RequestID != "" && r.RequestID != q.RequestID {
		return false
	}
	if q.Contains == "" || strings.Contains(r.Message, q.Contains) {
		return true
	}
	for _, v := range r.Attrs {
		if strings.Contains(v, q.Contains) {
			return true
		}
	}
	return false
}

// Close writes what is buffered and closes the open segment files. It
// returns by ctx's end, saying what it left: a store whose disk hangs
// does not hold up the host's Close. It is safe to call twice.
func (s *Store) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("logstore: close: writing the buffered records: %w", ctx.Err())
	}
}

func (s *Store) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := []error{s.flushAllLocked()}
	for name, l := range s.logs {
		errs = append(errs, l.f.Close())
		delete(s.logs, name)
	}
	s.closed = true
	return errors.Join(errs...)
}

// Handler returns a slog.Handler that passes records to next and stores
// those carrying a "function" attribute at Info level or above.
func (s *Store) Handler(next slog.Handler) slog.Handler { return &tee{store: s, next: next} }

type tee struct {
	store  *Store
	next   slog.Handler
	attrs  []slog.Attr
	prefix string // open groups, "a.b."
}

func (t *tee) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || t.next.Enabled(ctx, l)
}

func (t *tee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.next.Enabled(ctx, r.Level) {
		err = t.next.Handle(ctx, r)
	}
	if r.Level < slog.LevelInfo || !t.aboutFunction(r) {
		return err
	}
	rec := Record{Time: r.Time, Level: r.Level, Message: r.Message}
	set := func(a slog.Attr, prefix string) {
		v := a.Value.Resolve().String()
		switch prefix + a.Key {
		case "function":
			rec.Function = v
		case "version":
			rec.Version = v
		case "instance":
			rec.Instance = v
		case "request_id":
			rec.RequestID = v
		default:
			if rec.Attrs == nil {
				rec.Attrs = make(map[string]string, len(t.attrs)+r.NumAttrs())
			}
			rec.Attrs[prefix+a.Key] = v
		}
	}
	for _, a := range t.attrs {
		set(a, "")
	}
	r.Attrs(func(a slog.Attr) bool { set(a, t.prefix); return true })
	return errors.Join(err, t.store.Append(rec))
}

// aboutFunction reports whether r or the handler's attributes name a
// function; other records are not stored.
func (t *tee) aboutFunction(r slog.Record) bool {
	for _, a := range t.attrs {
		if a.Key == "function" {
			return true
		}
	}
	found := false
	if t.prefix == "" {
		r.Attrs(func(a slog.Attr) bool { found = a.Key == "function"; return !found })
	}
	return found
}

func (t *tee) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.next = t.next.WithAttrs(as)
	for _, a := range as {
		a.Key = t.prefix + a.Key
		c.attrs = append(slices.Clip(c.attrs), a)
	}
	return &c
}

func (t *tee) WithGroup(name string) slog.Handler {
	if name == "" {
		return t
	}
	c := *t
	c.next = t.next.WithGroup(name)
	c.prefix = t.prefix + name + "."
	return &c
}
