package boltstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/edge/fleet/store/boltstore"
	"github.com/edgekit/edgekit/edge/fleet/store/storetest"
)

func TestConformance(t *testing.T) {
	var path string
	open := func(t *testing.T) store.Store {
		s, err := boltstore.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T) store.Store {
			path = filepath.Join(t.TempDir(), "fleet.db")
			return open(t)
		},
		Reopen: open,
	})
}

// TestDamagedFile: a file that is not a store is refused with an error,
// and a flipped byte in a page is ErrDamaged, not a crash.
func TestDamagedFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "fleet.db")
	if err := os.WriteFile(path, []byte("not a bbolt file, not at all, and long enough to be read as a page header"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := boltstore.Open(path, nil); err == nil {
		t.Fatal("a file of garbage opened as a store")
	}
	path = filepath.Join(t.TempDir(), "fleet.db")
	s, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := s.Apply(ctx, store.Put("reports", "gw-"+string(rune('a'+i%26))+string(rune('a'+i/26)), make([]byte, 500))); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close(ctx)
	b, _ := os.ReadFile(path)
	// Zero every page after the meta pages and the first few: the
	// records' leaves are gone.
	for i := 4 * 4096; i < len(b); i++ {
		b[i] = 0xff
	}
	_ = os.WriteFile(path, b, 0o600)
	s, err = boltstore.Open(path, nil)
	if err != nil {
		// bbolt reads its freelist at open, and finds it damaged.
		if !errors.Is(err, store.ErrDamaged) {
			t.Fatalf("opening a damaged file: %v, want ErrDamaged", err)
		}
		return
	}
	defer s.Close(ctx)
	if _, err = s.List(ctx, "reports", ""); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("listing a damaged file: %v, want ErrDamaged", err)
	}
}
