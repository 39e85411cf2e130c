// Package boltstore is the fleet's embedded store: a store.Store in one
// go.etcd.io/bbolt file, needing no server. One process holds the file at
// a time (bbolt locks it); fleet replicas that share a store use
// pgstore.
//
// Each collection is two buckets: the records by key (each value behind
// its 8-byte version), and an index by version for Changes. Every Apply is
// one bbolt transaction, flushed to disk before it returns.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/internal/boltsafe"
)

// Options tune a Store. A nil *Options means the defaults.
type Options struct {
	// LockTimeout bounds the wait for another process's lock on the
	// file; default 5 s.
	LockTimeout time.Duration
	// NoSync skips the flush of each Apply: faster, and a power loss
	// may lose the last writes (a process crash loses nothing). For
	// tests and benchmarks.
	NoSync bool
}

// Store is a store.Store in a bbolt file.
type Store struct {
	db     *bbolt.DB
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

var (
	bucketMeta   = []byte("meta")
	bucketLeases = []byte("leases")
	keySeq       = []byte("seq")
)

func recordsBucket(coll string) []byte { return []byte("c:" + coll) }
func changesBucket(coll string) []byte { return []byte("v:" + coll) }

// Open opens (or creates) the store in the file at path.
func Open(path string, opts *Options) (*Store, error) {
	o := Options{LockTimeout: 5 * time.Second}
	if opts != nil {
		o = *opts
		if o.LockTimeout <= 0 {
			o.LockTimeout = 5 * time.Second
		}
	}
	var db *bbolt.DB
	err := boltsafe.Recovered(store.ErrDamaged, func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: o.LockTimeout, NoSync: o.NoSync})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: opening %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketLeases} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltstore: %s: %w", path, err)
	}
	return s, nil
}

var errClosed = fmt.Errorf("boltstore: %w", store.ErrClosed)

func (s *Store) update(f func(tx *bbolt.Tx) error) error {
	if s.closed.Load() {
		return errClosed
	}
	return boltsafe.Update(s.db, store.ErrDamaged, errClosed, f)
}

func (s *Store) view(f func(tx *bbolt.Tx) error) error {
	if s.closed.Load() {
		return errClosed
	}
	return boltsafe.View(s.db, store.ErrDamaged, errClosed, f)
}

// split reads a stored value: its version, then the document.
func split(coll, key string, v []byte) (store.Record, error) {
	if len(v) < 8 {
		return store.Record{}, fmt.Errorf("boltstore: %s/%s: %w: a value of %d bytes", coll, key, store.ErrDamaged, len(v))
	}
	return store.Record{Collection: coll, Key: key, Version: binary.BigEndian.Uint64(v), Value: bytes.Clone(v[8:])}, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, coll, key string) (store.Record, error) {
	if err := store.CheckName(coll, key); err != nil {
		return store.Record{}, err
	}
	var r store.Record
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(recordsBucket(coll))
		var v []byte
		if b != nil {
			v = b.Get([]byte(key))
		}
		if v == nil {
			return fmt.Errorf("%s/%s: %w", coll, key, store.ErrNotFound)
		}
		var err error
		r, err = split(coll, key, v)
		return err
	})
	return r, err
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, coll, prefix string) ([]store.Record, error) {
	if err := store.CheckName(coll, "-"); err != nil {
		return nil, err
	}
	var out []store.Record
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(recordsBucket(coll))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			r, err := split(coll, string(k), v)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Changes implements store.Store.
func (s *Store) Changes(ctx context.Context, coll string, after uint64, limit int) ([]store.Record, error) {
	if err := store.CheckName(coll, "-"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("boltstore: %w: Changes limit %d", store.ErrInvalid, limit)
	}
	var out []store.Record
	err := s.view(func(tx *bbolt.Tx) error {
		idx, recs := tx.Bucket(changesBucket(coll)), tx.Bucket(recordsBucket(coll))
		if idx == nil || recs == nil {
			return nil
		}
		c := idx.Cursor()
		start := binary.BigEndian.AppendUint64(nil, after+1)
		for k, _ := c.Seek(start); k != nil; k, _ = c.Next() {
			if len(k) < 8 {
				return fmt.Errorf("boltstore: %s: %w: a change index key of %d bytes", coll, store.ErrDamaged, len(k))
			}
			if len(out) >= limit && binary.BigEndian.Uint64(k) != out[len(out)-1].Version {
				break // the last Apply's records are all in
			}
			key := string(k[8:])
			r, err := split(coll, key, recs.Get(k[8:]))
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, ops ...store.Op) (uint64, error) {
	if err := store.CheckOps(ops); err != nil {
		return 0, fmt.Errorf("boltstore: %w", err)
	}
	var version uint64
	err := s.update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if raw := meta.Get(keySeq); len(raw) == 8 {
			version = binary.BigEndian.Uint64(raw)
		}
		version++
		for _, op := range ops {
			recs, err := tx.CreateBucketIfNotExists(recordsBucket(op.Collection))
			if err != nil {
				return err
			}
			idx, err := tx.CreateBucketIfNotExists(changesBucket(op.Collection))
			if err != nil {
				return err
			}
			key := []byte(op.Key)
			var found uint64
			if old := recs.Get(key); old != nil {
				r, err := split(op.Collection, op.Key, old)
				if err != nil {
					return err
				}
				found = r.Version
			}
			if !store.Holds(op, found) {
				return store.ConflictError(op, found)
			}
			if found != 0 {
				if err := idx.Delete(append(binary.BigEndian.AppendUint64(nil, found), key...)); err != nil {
					return err
				}
			}
			v := append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(op.Value)), version), op.Value...)
			if err := recs.Put(key, v); err != nil {
				return err
			}
			if err := idx.Put(append(binary.BigEndian.AppendUint64(nil, version), key...), nil); err != nil {
				return err
			}
		}
		return meta.Put(keySeq, binary.BigEndian.AppendUint64(nil, version))
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: %w", err)
	}
	return version, nil
}

// Lease implements store.Store.
func (s *Store) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if err := store.CheckLease(name, holder, ttl); err != nil {
		return false, err
	}
	held := false
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		now := time.Now()
		if v := b.Get([]byte(name)); len(v) >= 8 {
			until := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			if string(v[8:]) != holder && now.Before(until) {
				return nil
			}
		}
		held = true
		return b.Put([]byte(name), append(binary.BigEndian.AppendUint64(nil, uint64(now.Add(ttl).UnixNano())), holder...))
	})
	if err != nil {
		return false, fmt.Errorf("boltstore: lease %s: %w", name, err)
	}
	return held, nil
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, name, holder string) error {
	if err := store.CheckLease(name, holder, 1); err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if v := b.Get([]byte(name)); len(v) >= 8 && string(v[8:]) == holder {
			return b.Delete([]byte(name))
		}
		return nil
	})
}

// Close implements store.Store: it waits for transactions under way, up
// to ctx.
func (s *Store) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- s.db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("boltstore: close: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("boltstore: close: transactions under way: %w", ctx.Err())
	}
}
