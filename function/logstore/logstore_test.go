package logstore_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function/logstore"
)

func TestQueryFilters(t *testing.T) {
	s, err := logstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i, r := range []logstore.Record{
		{Message: "starting", Level: slog.LevelInfo},
		{Message: "reading sensor", Level: slog.LevelInfo, RequestID: "r1", Attrs: map[string]string{"device": "boiler"}},
		{Message: "sensor timeout", Level: slog.LevelWarn, RequestID: "r1"},
		{Message: "reading sensor", Level: slog.LevelInfo, RequestID: "r2", Attrs: map[string]string{"device": "pump"}},
		{Message: "failed", Level: slog.LevelError, RequestID: "r2"},
	} {
		r.Function, r.Time = "f", base.Add(time.Duration(i)*time.Second)
		if err := s.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Append(logstore.Record{Function: "other", Message: "reading sensor", Time: base})
	msgs := func(q logstore.Query) string {
		t.Helper()
		q.Function = "f"
		rs, err := s.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Message)
		}
		return strings.Join(out, ",")
	}
	for name, tc := range map[string]struct {
		q    logstore.Query
		want string
	}{
		"all, newest first": {logstore.Query{}, "failed,reading sensor,sensor timeout,reading sensor,starting"},
		"limit":             {logstore.Query{Limit: 2}, "failed,reading sensor"},
		"level":             {logstore.Query{MinLevel: slog.LevelWarn}, "failed,sensor timeout"},
		"request id":        {logstore.Query{RequestID: "r1"}, "sensor timeout,reading sensor"},
		"substring in attr": {logstore.Query{Contains: "pump"}, "reading sensor"},
		"time range":        {logstore.Query{From: base.Add(time.Second), To: base.Add(2 * time.Second)}, "sensor timeout,reading sensor"},
	} {
		if got := msgs(tc.q); got != tc.want {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
	if _, err := s.Query(logstore.Query{Function: "../x"}); err == nil {
		t.Error("a query for ../x was accepted")
	}
}

// A chatty function stays within its bound and keeps its newest records.
func TestRotationBound(t *testing.T) {
	dir := t.TempDir()
	s, _ := logstore.Open(dir, &logstore.Options{MaxBytes: 64 << 10, Segments: 4})
	defer s.Close(context.Background())
	line := strings.Repeat("x", 1000)
	for i := range 2000 { // ~2 MB through a 64 KB bound
		if err := s.Append(logstore.Record{Function: "chatty", Message: line, Attrs: map[string]string{"n": strconv.Itoa(i)}, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	ents, _ := os.ReadDir(filepath.Join(dir, "chatty"))
	for _, e := range ents {
		info, _ := e.Info()
		total += info.Size()
	}
	if total > 64<<10+2000 {
		t.Errorf("%d bytes on disk for a 64 KB bound", total)
	}
	rs, _ := s.Query(logstore.Query{Function: "chatty", Limit: 1})
	if len(rs) != 1 || rs[0].Attrs["n"] != "1999" {
		t.Errorf("newest record %+v", rs)
	}
}

// The tee handler stores what carries a function attribute and passes
// everything on.
func TestHandler(t *testing.T) {
	s, _ := logstore.Open(t.TempDir(), nil)
	defer s.Close(context.Background())
	var passed strings.Builder
	log := slog.New(s.Handler(slog.NewTextHandler(&passed, nil)))
	log.Info("host starting")
	fl := log.With("function", "f", "version", "2", "instance", "2-1")
	fl.Info("hello", "request_id", "abc", "device", "pump")
	fl.Debug("not stored below info")
	fl.WithGroup("g").Warn("grouped", "k", "v")
	rs, err := s.Query(logstore.Query{Function: "f"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[1].Message != "hello" || rs[1].RequestID != "abc" || rs[1].Version != "2" || rs[1].Instance != "2-1" || rs[1].Attrs["device"] != "pump" {
		t.Fatalf("stored %+v", rs)
	}
	if rs[0].Attrs["g.k"] != "v" {
		t.Errorf("grouped attribute %v", rs[0].Attrs)
	}
	if !strings.Contains(passed.String(), "host starting") || !strings.Contains(passed.String(), "hello") {
		t.Errorf("records not passed on: %s", passed.String())
	}
}

// TestAppendsReachTheFile: buffered records are written within FlushDelay
// without anyone asking, all of them by Close, and nothing is appended
// after Close.
func TestAppendsReachTheFile(t *testing.T) {
	dir := t.TempDir()
	s, err := logstore.Open(dir, &logstore.Options{FlushDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	onDisk := func() string {
		files, _ := filepath.Glob(filepath.Join(dir, "f", "*.log"))
		var all string
		for _, f := range files {
			b, _ := os.ReadFile(f)
			all += string(b)
		}
		return all
	}
	if err := s.Append(logstore.Record{Function: "f", Message: "first", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(onDisk(), "first") {
		if time.Now().After(deadline) {
			t.Fatal("a buffered record was not written within its flush delay")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Append(logstore.Record{Function: "f", Message: "last", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(onDisk(), "last") {
		t.Error("Close did not write the buffered record")
	}
	if err := s.Append(logstore.Record{Function: "f", Message: "late", Time: time.Now()}); err == nil {
		t.Error("an append after Close was accepted")
	}
}

// TestSegmentFiles: log files are readable by their owner only, and a link
// planted where a segment goes is not written through.
func TestSegmentFiles(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "f"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "f", "0000000000000000.log")); err != nil {
		t.Fatal(err)
	}
	s, err := logstore.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if err := s.Append(logstore.Record{Function: "f", Message: "m", Time: time.Now()}); err == nil {
		t.Error("an append through a planted link was accepted")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("the link's target was written: %q", b)
	}
	if err := s.Append(logstore.Record{Function: "g", Message: "m", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "g", "*.log"))
	if len(files) != 1 {
		t.Fatalf("segments of g: %v", files)
	}
	if st, _ := os.Stat(files[0]); st.Mode().Perm() != 0o600 {
		t.Errorf("segment mode %v, want 0600", st.Mode().Perm())
	}
}
