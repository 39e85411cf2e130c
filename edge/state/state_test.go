package state_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
)

func open(t *testing.T, path string, opts *state.Options) *state.Store {
	t.Helper()
	s, err := state.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func deployment(id string, rev uint64) *app.Deployment {
	return &app.Deployment{Schema: app.SchemaVersion, ID: id, Revision: rev}
}

// TestRecords: every kind of record is written, read back after a reopen,
// and the history stays within its bound, newest first.
func TestRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path, &state.Options{HistoryPerApp: 3})
	if j, err := s.Journal(); err != nil || j.Generation != 0 || j.Pending != nil {
		t.Fatalf("a new file's journal: %+v %v", j, err)
	}
	if _, err := s.SaveJournal(state.Journal{LastGood: deployment("d1", 1)}); err != nil {
		t.Fatal(err)
	}
	j, err := s.SaveJournal(state.Journal{Pending: deployment("d2", 2), Step: "fetching", LastGood: deployment("d1", 1)})
	if err != nil || j.Generation != 2 {
		t.Fatalf("second journal write: %+v %v", j, err)
	}
	for i := range 5 {
		if err := s.AppendHistory(app.AppStatus{App: "web", Version: fmt.Sprint(i), Phase: app.PhaseRunning}); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.AppendHistory(app.AppStatus{App: "db", Version: "1"})
	if err := s.PutInstalled(state.Installed{App: "f", Kind: app.KindFunction, Version: "1", SHA256: "ab"}); err != nil {
		t.Fatal(err)
	}
	_ = s.PutInstalled(state.Installed{App: "f", Kind: app.KindFunction, Version: "2"})
	_ = s.DeleteInstalled("f", "1")
	if err := s.SetTriggerState("f.hourly", json.RawMessage(`{"lastRun":"2026-12-02T10:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(state.Device{Name: "boiler", Driver: "modbus", Config: json.RawMessage(`{"unit":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(state.Device{Name: "x"}); err == nil {
		t.Error("a device without a driver was taken")
	}
	_ = s.Close(context.Background())

	s = open(t, path, &state.Options{HistoryPerApp: 3})
	j, err = s.Journal()
	if err != nil || j.Generation != 2 || j.Pending.ID != "d2" || j.Step != "fetching" || j.LastGood.ID != "d1" {
		t.Errorf("journal after reopening: %+v %v", j, err)
	}
	h, err := s.History("web", 0)
	if err != nil || len(h) != 3 || h[0].Version != "4" || h[2].Version != "2" {
		t.Errorf("web's history: %+v %v, want versions 4, 3, 2", h, err)
	}
	if h, _ := s.History("web", 1); len(h) != 1 || h[0].Version != "4" {
		t.Errorf("web's newest: %+v", h)
	}
	if h, _ := s.History("nope", 0); len(h) != 0 {
		t.Errorf("history of an app never seen: %+v", h)
	}
	if in, err := s.ListInstalled(); err != nil || len(in) != 1 || in[0].Version != "2" {
		t.Errorf("installed: %+v %v", in, err)
	}
	if v, err := s.TriggerState("f.hourly"); err != nil || !strings.Contains(string(v), "lastRun") {
		t.Errorf("trigger state: %s %v", v, err)
	}
	if v, err := s.TriggerState("other"); err != nil || v != nil {
		t.Errorf("state of a trigger that kept none: %s %v", v, err)
	}
	if ds, err := s.Devices(); err != nil || len(ds) != 1 || ds[0].Driver != "modbus" {
		t.Errorf("devices: %+v %v", ds, err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	if _, err := s.SaveJournal(state.Journal{}); !errors.Is(err, state.ErrClosed) {
		t.Errorf("a write after Close: %v, want ErrClosed", err)
	}
}

// flip changes one byte of each copy of marker in the file (bbolt's
// copy-on-write leaves old copies in free pages).
func flip(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := bytes.Index(b, []byte(marker)); i >= 0; i = bytes.Index(b, []byte(marker)) {
		b[i] ^= 0x20
		n++
	}
	if n == 0 {
		t.Fatalf("%q is not in the file", marker)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedRecords: a byte flipped on disk costs the record it is in,
// which is reported, and the others read on; a damaged journal slot falls
// back to the other one, a write older.
func TestDamagedRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path, nil)
	for _, name := range []string{"alpha-device", "beta-device", "gamma-device"} {
		if err := s.PutDevice(state.Device{Name: name, Driver: "sim", Config: json.RawMessage(`{"marker":"` + name + `-marker"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SaveJournal(state.Journal{Step: "older-step-marker"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveJournal(state.Journal{Step: "newer-step-marker"}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())
	flip(t, path, "beta-device-marker")
	flip(t, path, "newer-step-marker")

	s = open(t, path, nil)
	ds, err := s.Devices()
	if !errors.Is(err, state.ErrDamaged) || !strings.Contains(err.Error(), "beta-device") {
		t.Errorf("devices with one damaged: %v, want ErrDamaged naming beta-device", err)
	}
	if len(ds) != 2 || ds[0].Name != "alpha-device" || ds[1].Name != "gamma-device" {
		t.Errorf("the undamaged devices: %+v", ds)
	}
	j, err := s.Journal()
	if err != nil || j.Step != "older-step-marker" || j.Generation != 1 {
		t.Errorf("journal with its newest slot damaged: %+v %v, want the older one", j, err)
	}
	// The next write goes over the damaged slot, and is read.
	if _, err := s.SaveJournal(state.Journal{Step: "again-step-marker"}); err != nil {
		t.Fatal(err)
	}
	if j, err := s.Journal(); err != nil || j.Step != "again-step-marker" || j.Generation != 2 {
		t.Errorf("journal written over the damaged slot: %+v %v", j, err)
	}
	_ = s.Close(context.Background())
	flip(t, path, "again-step-marker")
	flip(t, path, "older-step-marker")
	s = open(t, path, nil)
	if _, err := s.Journal(); !errors.Is(err, state.ErrDamaged) {
		t.Errorf("journal with both slots damaged: %v, want ErrDamaged", err)
	}
}

// TestNotAStateFile: a file that is not a state file is refused with an
// error, not a panic; one held by another Store waits at most LockTimeout.
func TestNotAStateFile(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not bbolt "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := state.Open(junk, nil); err == nil {
		_ = s.Close(context.Background())
		t.Error("a file of junk opened")
	}
	path := filepath.Join(dir, "state.db")
	open(t, path, nil)
	if s, err := state.Open(path, &state.Options{LockTimeout: 50_000_000}); err == nil {
		_ = s.Close(context.Background())
		t.Error("a second Store opened a locked file")
	}
}
