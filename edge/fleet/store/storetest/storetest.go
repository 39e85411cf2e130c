// Package storetest is the conformance suite of the fleet's store: every
// backend of store.Store passes Run, and so does a vendor's own.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/fleet/store"
)

// Backend opens stores for the suite.
type Backend struct {
	// Open returns a new, empty store. The suite closes it.
	Open func(t *testing.T) store.Store
	// Reopen, when set, opens the store that the last Open of this test
	// returned, after the suite has closed it: what was written must be
	// there, and new versions must be above the old ones.
	Reopen func(t *testing.T) store.Store
}

// Run runs the conformance suite against b.
func Run(t *testing.T, b Backend) {
	ctx := context.Background()
	open := func(t *testing.T) store.Store {
		s := b.Open(t)
		t.Cleanup(func() { _ = s.Close(ctx) })
		return s
	}
	t.Run("GetMissing", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "apps", "nothing"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
		}
	})
	t.Run("CreateUpdateConflicts", func(t *testing.T) {
		s := open(t)
		v1, err := s.Apply(ctx, store.Create("apps", "a", []byte(`{"n":1}`)))
		if err != nil || v1 == 0 {
			t.Fatalf("create: %d %v", v1, err)
		}
		r, err := s.Get(ctx, "apps", "a")
		if err != nil || string(r.Value) != `{"n":1}` || r.Version != v1 || r.Collection != "apps" || r.Key != "a" {
			t.Fatalf("Get after create: %+v %v", r, err)
		}
		if _, err := s.Apply(ctx, store.Create("apps", "a", []byte(`{}`))); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second create: %v, want ErrConflict", err)
		}
		if _, err := s.Apply(ctx, store.Update("apps", "a", []byte(`{}`), v1+100)); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("update at a wrong version: %v, want ErrConflict", err)
		}
		if _, err := s.Apply(ctx, store.Update("apps", "missing", []byte(`{}`), v1)); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("update of a missing record: %v, want ErrConflict", err)
		}
		v2, err := s.Apply(ctx, store.Update("apps", "a", []byte(`{"n":2}`), v1))
		if err != nil || v2 <= v1 {
			t.Fatalf("update: %d %v (after %d)", v2, err, v1)
		}
		v3, err := s.Apply(ctx, store.Put("apps", "a", []byte(`{"n":3}`)))
		if err != nil || v3 <= v2 {
			t.Fatalf("put: %d %v (after %d)", v3, err, v2)
		}
		if r, _ := s.Get(ctx, "apps", "a"); string(r.Value) != `{"n":3}` || r.Version != v3 {
			t.Fatalf("after put: %+v", r)
		}
	})
	t.Run("ApplyIsAtomic", func(t *testing.T) {
		s := open(t)
		v, _ := s.Apply(ctx, store.Create("apps", "taken", []byte(`1`)))
		_, err := s.Apply(ctx, store.Put("apps", "first", []byte(`1`)), store.Create("apps", "taken", []byte(`2`)))
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("apply with a failing op: %v, want ErrConflict", err)
		}
		if _, err := s.Get(ctx, "apps", "first"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the op before the failing one was written: %v", err)
		}
		if r, _ := s.Get(ctx, "apps", "taken"); string(r.Value) != "1" || r.Version != v {
			t.Fatalf("the record of the failing op changed: %+v", r)
		}
		if ch, _ := s.Changes(ctx, "apps", v, 10); len(ch) != 0 {
			t.Fatalf("a failed Apply shows in Changes: %+v", ch)
		}
	})
	t.Run("BadRequests", func(t *testing.T) {
		s := open(t)
		for name, ops := range map[string][]store.Op{
			"none":            nil,
			"twice":           {store.Put("apps", "a", nil), store.Put("apps", "a", nil)},
			"empty key":       {store.Put("apps", "", nil)},
			"nul in key":      {store.Put("apps", "a\x00b", nil)},
			"long key":        {store.Put("apps", string(bytes.Repeat([]byte("k"), store.MaxKey+1)), nil)},
			"bad collection":  {store.Put("Apps/x", "a", nil)},
			"no collection":   {store.Put("", "a", nil)},
			"version 0":       {store.Update("apps", "a", nil, 0)},
			"unknown condion": {{Collection: "apps", Key: "a", If: 7}},
		} {
			if _, err := s.Apply(ctx, ops...); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
		if _, err := s.Get(ctx, "Bad!", "a"); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Get of a bad collection: %v, want ErrInvalid", err)
		}
		if r, err := s.List(ctx, "apps", ""); err != nil || len(r) != 0 {
			t.Errorf("refused requests wrote %v (%v)", r, err)
		}
	})
	t.Run("OneVersionPerApply", func(t *testing.T) {
		s := open(t)
		v, err := s.Apply(ctx, store.Put("apps", "b", []byte("b")), store.Put("apps", "a", []byte("a")), store.Put("groups", "g", []byte("g")))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range [][2]string{{"apps", "a"}, {"apps", "b"}, {"groups", "g"}} {
			if r, _ := s.Get(ctx, k[0], k[1]); r.Version != v {
				t.Errorf("%s/%s at version %d, the Apply returned %d", k[0], k[1], r.Version, v)
			}
		}
		ch, _ := s.Changes(ctx, "apps", 0, 10)
		if len(ch) != 2 || ch[0].Key != "a" || ch[1].Key != "b" {
			t.Errorf("Changes of one Apply: %+v, want a then b", ch)
		}
	})
	t.Run("ListIsOrderedAndScoped", func(t *testing.T) {
		s := open(t)
		for _, k := range []string{"gw/2", "gw/10", "gw/1", "other", "gw"} {
			if _, err := s.Apply(ctx, store.Put("instances", k, []byte(k))); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = s.Apply(ctx, store.Put("apps", "gw/3", nil))
		got, err := s.List(ctx, "instances", "gw/")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, r := range got {
			keys = append(keys, r.Key)
			if string(r.Value) != r.Key || r.Collection != "instances" {
				t.Errorf("record %+v", r)
			}
		}
		if fmt.Sprint(keys) != "[gw/1 gw/10 gw/2]" {
			t.Errorf("List(instances, gw/) = %v, want [gw/1 gw/10 gw/2]", keys)
		}
		if all, _ := s.List(ctx, "instances", ""); len(all) != 5 {
			t.Errorf("List(instances) has %d records, want 5", len(all))
		}
		if none, _ := s.List(ctx, "nothing", ""); len(none) != 0 {
			t.Errorf("List of an unknown collection: %v", none)
		}
	})
	t.Run("Changes", func(t *testing.T) {
		s := open(t)
		var versions []uint64
		for i := range 5 {
			v, err := s.Apply(ctx, store.Put("reports", "gw-"+strconv.Itoa(i), []byte(strconv.Itoa(i))))
			if err != nil {
				t.Fatal(err)
			}
			versions = append(versions, v)
		}
		// gw-1 written again: it moves to the end, once.
		vLast, _ := s.Apply(ctx, store.Put("reports", "gw-1", []byte("again")))
		ch, err := s.Changes(ctx, "reports", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, r := range ch {
			keys = append(keys, r.Key)
		}
		if fmt.Sprint(keys) != "[gw-0 gw-2 gw-3 gw-4 gw-1]" || string(ch[4].Value) != "again" || ch[4].Version != vLast {
			t.Errorf("Changes: %v (%+v)", keys, ch[len(ch)-1])
		}
		for i := 1; i < len(ch); i++ {
			if ch[i].Version <= ch[i-1].Version {
				t.Errorf("Changes out of version order: %d after %d", ch[i].Version, ch[i-1].Version)
			}
		}
		page, _ := s.Changes(ctx, "reports", versions[1], 2)
		if len(page) != 2 || page[0].Key != "gw-2" || page[1].Key != "gw-3" {
			t.Errorf("Changes after version %d, limit 2: %+v", versions[1], page)
		}
		if rest, _ := s.Changes(ctx, "reports", vLast, 10); len(rest) != 0 {
			t.Errorf("Changes after the last version: %+v", rest)
		}
		if other, _ := s.Changes(ctx, "apps", 0, 10); len(other) != 0 {
			t.Errorf("Changes of another collection: %+v", other)
		}
	})
	t.Run("ChangesNeverSplitAnApply", func(t *testing.T) {
		// Paging by the last version seen: an Apply's records all come
		// in one page, whatever the limit, or the rest would be skipped.
		s := open(t)
		var ops []store.Op
		for i := range 10 {
			ops = append(ops, store.Put("reports", fmt.Sprintf("gw-%02d", i), nil))
		}
		if _, err := s.Apply(ctx, ops...); err != nil {
			t.Fatal(err)
		}
		_, _ = s.Apply(ctx, store.Put("reports", "later", nil))
		seen, after := 0, uint64(0)
		for range 20 {
			page, err := s.Changes(ctx, "reports", after, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			seen += len(page)
			after = page[len(page)-1].Version
		}
		if seen != 11 {
			t.Fatalf("paging through Changes with a limit of 3 saw %d of 11 records", seen)
		}
	})
	t.Run("ValuesAreCopied", func(t *testing.T) {
		s := open(t)
		buf := []byte("original")
		_, _ = s.Apply(ctx, store.Put("apps", "a", buf))
		copy(buf, "changed!")
		r, _ := s.Get(ctx, "apps", "a")
		if string(r.Value) != "original" {
			t.Fatalf("the store kept the caller's slice: %q", r.Value)
		}
		copy(r.Value, "changed!")
		if r2, _ := s.Get(ctx, "apps", "a"); string(r2.Value) != "original" {
			t.Fatalf("a Get shares the stored bytes: %q", r2.Value)
		}
	})
	t.Run("BigValues", func(t *testing.T) {
		s := open(t)
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		if _, err := s.Apply(ctx, store.Put("versions", "big", big)); err != nil {
			t.Fatal(err)
		}
		if r, _ := s.Get(ctx, "versions", "big"); !bytes.Equal(r.Value, big) {
			t.Fatalf("1 MiB value read back as %d bytes", len(r.Value))
		}
	})
	t.Run("ConcurrentUpdatesAndChanges", func(t *testing.T) {
		s := open(t)
		v0, _ := s.Apply(ctx, store.Create("counters", "n", []byte("0")))
		const writers, each = 4, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for range writers {
			wg.Go(func() {
				for range each {
					for {
						r, err := s.Get(ctx, "counters", "n")
						if err != nil {
							errs <- err
							return
						}
						n, _ := strconv.Atoi(string(r.Value))
						_, err = s.Apply(ctx, store.Update("counters", "n", []byte(strconv.Itoa(n+1)), r.Version),
							store.Put("log", fmt.Sprintf("%08d", n+1), nil))
						if err == nil {
							break
						}
						if !errors.Is(err, store.ErrConflict) {
							errs <- err
							return
						}
					}
				}
			})
		}
		// A reader following the change feed while the writers run sees
		// every write, in order.
		seen, after := 0, v0
		for seen < writers*each {
			ch, err := s.Changes(ctx, "log", after, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range ch {
				seen++
				if want := fmt.Sprintf("%08d", seen); r.Key != want {
					t.Fatalf("change feed: %s, want %s (a write was missed or came out of order)", r.Key, want)
				}
				after = r.Version
			}
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
		}
		wg.Wait()
		if r, _ := s.Get(ctx, "counters", "n"); string(r.Value) != strconv.Itoa(writers*each) {
			t.Fatalf("counter %s after %d updates", r.Value, writers*each)
		}
	})
	t.Run("Leases", func(t *testing.T) {
		s := open(t)
		held, err := s.Lease(ctx, "rollouts", "a", time.Hour)
		if err != nil || !held {
			t.Fatalf("first lease: %v %v", held, err)
		}
		if held, _ := s.Lease(ctx, "rollouts", "b", time.Hour); held {
			t.Fatal("a second holder got a held lease")
		}
		if held, _ := s.Lease(ctx, "rollouts", "a", time.Hour); !held {
			t.Fatal("the holder could not renew")
		}
		if held, _ := s.Lease(ctx, "other", "b", time.Hour); !held {
			t.Fatal("leases of another name are separate")
		}
		if err := s.Release(ctx, "rollouts", "b"); err != nil {
			t.Fatal(err)
		}
		if held, _ := s.Lease(ctx, "rollouts", "b", time.Hour); held {
			t.Fatal("a release by another holder freed the lease")
		}
		if err := s.Release(ctx, "rollouts", "a"); err != nil {
			t.Fatal(err)
		}
		if held, _ := s.Lease(ctx, "rollouts", "b", time.Millisecond); !held {
			t.Fatal("a released lease could not be taken")
		}
		// b's lease of a millisecond expires: a takes it.
		deadline := time.Now().Add(10 * time.Second)
		for {
			held, err := s.Lease(ctx, "rollouts", "a", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if held {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("an expired lease was never free")
			}
		}
		if _, err := s.Lease(ctx, "rollouts", "", time.Hour); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("a lease without a holder: %v, want ErrInvalid", err)
		}
		if _, err := s.Lease(ctx, "rollouts", "a", 0); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("a lease of no time: %v, want ErrInvalid", err)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		s := b.Open(t)
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(ctx); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := s.Get(ctx, "apps", "a"); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Get after Close: %v, want ErrClosed", err)
		}
		if _, err := s.Apply(ctx, store.Put("apps", "a", nil)); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Apply after Close: %v, want ErrClosed", err)
		}
	})
	if b.Reopen != nil {
		t.Run("Reopen", func(t *testing.T) {
			s := b.Open(t)
			v, err := s.Apply(ctx, store.Put("apps", "kept", []byte("yes")))
			if err != nil {
				t.Fatal(err)
			}
			if held, _ := s.Lease(ctx, "rollouts", "a", time.Hour); !held {
				t.Fatal("lease")
			}
			if err := s.Close(ctx); err != nil {
				t.Fatal(err)
			}
			s = b.Reopen(t)
			t.Cleanup(func() { _ = s.Close(ctx) })
			if r, err := s.Get(ctx, "apps", "kept"); err != nil || string(r.Value) != "yes" || r.Version != v {
				t.Fatalf("after reopening: %+v %v", r, err)
			}
			v2, err := s.Apply(ctx, store.Put("apps", "new", nil))
			if err != nil || v2 <= v {
				t.Fatalf("a version after reopening: %d (%v), before %d", v2, err, v)
			}
			if held, _ := s.Lease(ctx, "rollouts", "b", time.Hour); held {
				t.Fatal("a lease was lost by reopening")
			}
		})
	}
}
