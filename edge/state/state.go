// Package state keeps a gateway's state on disk, in one bbolt file: the
// deployment journal (the deployment being applied and where it is, the
// last good one, the latest status), the versions installed, each app's
// status history (bounded), what triggers keep between runs (a timer's
// last run) and the device registry.
//
// It is for the gateway (package edge) and its reconciler. bbolt writes
// every transaction through a copy-on-write B+tree and a double-buffered
// meta page, so the file opens after a kill -9 or a power cut at any point
// with either the old or the new contents of each write. On top of that
// every record carries a CRC-32C of its own, and the journal is written to
// two slots in turn: a record damaged on disk (a flipped byte) costs that
// record, is reported with ErrDamaged, and the rest read on; a damaged
// journal slot falls back to the other, one write older.
//
// The file has a schema version; Open migrates an older file forward, each
// step in one transaction, and refuses a newer one (ErrSchema). One
// process at a time opens a file (bbolt locks it; Options.LockTimeout
// bounds the wait). A Store is safe for concurrent use.
package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"time"

	"go.etcd.io/bbolt"

	"github.com/edgekit/edgekit/internal/boltsafe"
)

// Sentinel errors.
var (
	// ErrDamaged: a record (or the file) does not read back as written;
	// the error names which.
	ErrDamaged = errors.New("state damaged")
	// ErrSchema: the file was written by a newer schema than this code
	// reads.
	ErrSchema = errors.New("state schema not supported")
	// ErrClosed: the Store is closed.
	ErrClosed = errors.New("state store closed")
)

// SchemaVersion is the layout this code writes.
const SchemaVersion = 1

// Options configure a Store. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for another process's lock on the
	// file; default 5 s.
	LockTimeout time.Duration
	// HistoryPerApp bounds each app's status history; default 200 (the
	// oldest go first).
	HistoryPerApp int
	// Logger receives the store's records (damage found, migrations);
	// nil discards.
	Logger *slog.Logger
}

// Store is the gateway's state file.
type Store struct {
	db   *bbolt.DB
	opts Options
	log  *slog.Logger
}

// Buckets.
var (
	bucketMeta      = []byte("meta")
	bucketJournal   = []byte("journal")
	bucketHistory   = []byte("history") // a sub-bucket per app
	bucketInstalled = []byte("installed")
	bucketTriggers  = []byte("triggers")
	bucketDevices   = []byte("devices")
	keySchema       = []byte("schema")
)

// migration turns the layout of schema version from into from+1, inside
// one transaction.
type migration func(tx *bbolt.Tx) error

// migrations[i] migrates schema i+1 to i+2. Schema 1 is the first layout.
var migrations = []migration{}

// Open opens the state file at path, creating it (0600) when missing, and
// migrates it to SchemaVersion.
func Open(path string, opts *Options) (*Store, error) {
	return open(path, opts, SchemaVersion, migrations)
}

func open(path string, opts *Options, version int, steps []migration) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.HistoryPerApp <= 0 {
		o.HistoryPerApp = 200
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var db *bbolt.DB
	err := recovered(func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: o.LockTimeout})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("state: opening %s: %w", path, err)
	}
	s := &Store{db: db, opts: o, log: o.Logger}
	if err := s.migrate(version, steps); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("state: %s: %w", path, err)
	}
	return s, nil
}

// migrate brings the file to version, each step in a transaction of its
// own, so a kill between steps resumes at the next.
func (s *Store) migrate(version int, steps []migration) error {
	for {
		var at int
		err := s.update(func(tx *bbolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			raw := meta.Get(keySchema)
			if raw == nil { // a new file
				for _, b := range [][]byte{bucketJournal, bucketHistory, bucketInstalled, bucketTriggers, bucketDevices} {
					if _, err := tx.CreateBucketIfNotExists(b); err != nil {
						return err
					}
				}
				at = version
				return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, uint32(version)))
			}
			if len(raw) != 4 {
				return fmt.Errorf("%w: the schema version record is %d bytes", ErrDamaged, len(raw))
			}
			at = int(binary.BigEndian.Uint32(raw))
			switch {
			case at > version:
				return fmt.Errorf("%w: the file has schema %d, this code reads up to %d", ErrSchema, at, version)
			case at == version:
				return nil
			case at < 1 || at-1 >= len(steps):
				return fmt.Errorf("%w: no migration from schema %d", ErrSchema, at)
			}
			if err := steps[at-1](tx); err != nil {
				return fmt.Errorf("migrating schema %d to %d: %w", at, at+1, err)
			}
			s.log.Info("state: migrated", "from", at, "to", at+1)
			at++
			return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, uint32(at)))
		})
		if err != nil || at == version {
			return err
		}
	}
}

// Close closes the file, after the transactions under way, or returns at
// ctx's end (the file then closes when they finish). It is safe to call
// twice.
func (s *Store) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("state: close: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("state: close: transactions under way: %w", ctx.Err())
	}
}

// update and view run a transaction, turning bbolt's panics on a damaged
// page into ErrDamaged, and its closed database into ErrClosed.
func (s *Store) update(f func(tx *bbolt.Tx) error) error {
	return boltsafe.Update(s.db, ErrDamaged, errClosed, f)
}

func (s *Store) view(f func(tx *bbolt.Tx) error) error {
	return boltsafe.View(s.db, ErrDamaged, errClosed, f)
}

var errClosed = fmt.Errorf("state: %w", ErrClosed)

// recovered runs f, turning a panic (bbolt's answer to a page it cannot
// read) into ErrDamaged.
func recovered(f func() error) error { return boltsafe.Recovered(ErrDamaged, f) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal encodes v as a record: its CRC-32C, then its JSON.
func seal(v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), crc32.Checksum(body, castagnoli)), body...), nil
}

// unseal decodes a record into v, or says it is damaged.
func unseal(b []byte, v any) error {
	if len(b) < 4 || binary.BigEndian.Uint32(b) != crc32.Checksum(b[4:], castagnoli) {
		return ErrDamaged
	}
	if err := json.Unmarshal(b[4:], v); err != nil {
		return fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return nil
}

// put writes one record.
func put(tx *bbolt.Tx, bucket, key []byte, v any) error {
	b, err := seal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, b)
}

// list reads every record of a bucket into values made by each; a damaged
// one is left out and its error, naming it, joined to the one returned.
func list[T any](s *Store, bucket []byte) ([]T, error) {
	var out []T
	var damaged []error
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var x T
			if err := unseal(v, &x); err != nil {
				damaged = append(damaged, fmt.Errorf("state: %s record %q: %w", bucket, k, err))
				return nil
			}
			out = append(out, x)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	s.logDamage(damaged)
	return out, errors.Join(damaged...)
}

func (s *Store) logDamage(errs []error) {
	for _, err := range errs {
		s.log.Error("state: a damaged record is left out", "err", err)
	}
}
