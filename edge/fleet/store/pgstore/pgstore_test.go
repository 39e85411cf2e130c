package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/edge/fleet/store/pgstore"
	"github.com/edgekit/edgekit/edge/fleet/store/storetest"
	"github.com/edgekit/edgekit/internal/pgtest"
)

func TestConformance(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	n := 0
	var prefix string
	open := func(t *testing.T) store.Store {
		s, err := pgstore.Open(ctx, srv.DSN, &pgstore.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T) store.Store {
			// A store of its own for each test: its own tables.
			n++
			prefix = fmt.Sprintf("t%d_", n)
			return open(t)
		},
		Reopen: open,
	})
}

// TestServerRestart: a store whose server restarts (a crash) goes on
// working once it is back: what was committed is there, the versions go
// on growing.
func TestServerRestart(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	s, err := pgstore.Open(ctx, srv.DSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	v, err := s.Apply(ctx, store.Put("apps", "a", []byte("1")))
	if err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	var r store.Record
	for attempt := 0; attempt < 3; attempt++ { // the pool's idle connections died with the server
		if r, err = s.Get(ctx, "apps", "a"); err == nil {
			break
		}
	}
	if err != nil || string(r.Value) != "1" || r.Version != v {
		t.Fatalf("after the restart: %+v %v", r, err)
	}
	v2, err := s.Apply(ctx, store.Put("apps", "b", nil))
	if err != nil || v2 <= v {
		t.Fatalf("a write after the restart: %d %v", v2, err)
	}
}

func TestBadPrefix(t *testing.T) {
	_, err := pgstore.Open(context.Background(), "host=127.0.0.1 port=1", &pgstore.Options{Prefix: "x; DROP TABLE y"})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a prefix of SQL: %v, want ErrInvalid", err)
	}
}
