// Package store is what the fleet keeps its state in: a small, ordered
// key-value store of JSON documents in named collections, with a version
// on every record, conditional writes, atomic batches, a change feed and
// leases — the few things several fleet replicas need to share one store
// safely, in the way etcd gives them to Kubernetes.
//
// Two backends implement it: boltstore (go.etcd.io/bbolt, embedded, no
// server; one process) and pgstore (PostgreSQL, for replicas). Package
// storetest is the conformance suite both pass; a vendor's own backend
// passes it too.
//
// Versions are the store's write sequence: every record written by one
// Apply gets the same version, higher than every version written before
// it. Changes returns what was written after a version, in version order,
// so a reader that keeps the last version it saw misses nothing.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Backends wrap them with the collection and key.
var (
	// ErrNotFound: no record has that key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a conditional write's condition did not hold (the
	// record exists, is absent, or has another version).
	ErrConflict = errors.New("conflict")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrInvalid: a collection, key or operation breaks a rule.
	ErrInvalid = errors.New("invalid store request")
	// ErrDamaged: the backing storage does not read back as written.
	ErrDamaged = errors.New("store damaged")
)

// Record is one stored document.
type Record struct {
	Collection string
	Key        string
	Value      []byte
	// Version is the store's write sequence at the record's last write.
	Version uint64
}

// Cond is the condition of a write.
type Cond int

// Conditions.
const (
	// Always writes whatever is there.
	Always Cond = iota
	// Absent writes only if no record has the key (a create).
	Absent
	// AtVersion writes only if the record exists with Op.Version (an
	// update of what the writer read).
	AtVersion
)

// Op is one write of an Apply.
type Op struct {
	Collection string
	Key        string
	Value      []byte
	If         Cond
	Version    uint64 // for AtVersion
}

// Put is an unconditional write.
func Put(coll, key string, value []byte) Op { return Op{Collection: coll, Key: key, Value: value} }

// Create writes only a new record.
func Create(coll, key string, value []byte) Op {
	return Op{Collection: coll, Key: key, Value: value, If: Absent}
}

// Update writes only over the record at version.
func Update(coll, key string, value []byte, version uint64) Op {
	return Op{Collection: coll, Key: key, Value: value, If: AtVersion, Version: version}
}

// Replace writes over the record read at version, or creates it when
// version is 0 (it was absent): the write of a reader that keeps what it
// read.
func Replace(coll, key string, value []byte, version uint64) Op {
	if version == 0 {
		return Create(coll, key, value)
	}
	return Update(coll, key, value, version)
}

// Store is the fleet's storage. All methods are safe for concurrent use
// by goroutines of one process; several processes share a store when the
// backend says it can (pgstore).
type Store interface {
	// Get returns the record at coll and key, or ErrNotFound.
	Get(ctx context.Context, coll, key string) (Record, error)
	// List returns the records of coll whose keys start with prefix, in
	// key order.
	List(ctx context.Context, coll, prefix string) ([]Record, error)
	// Changes returns the records of coll written after version after,
	// in version order (records of one Apply in key order): up to limit,
	// and then the rest of the last Apply's, since an Apply's records
	// share a version and a reader resumes after the last version it saw.
	// A record written again since is returned once, at its last version.
	Changes(ctx context.Context, coll string, after uint64, limit int) ([]Record, error)
	// Apply writes ops atomically: all or none. A failed condition
	// returns an error wrapping ErrConflict that names the record; an op
	// may not name a record twice. It returns the version the writes got.
	Apply(ctx context.Context, ops ...Op) (uint64, error)
	// Lease takes or renews the lease name for holder until ttl from
	// now, if it is free, expired, or already holder's. It reports
	// whether holder has it. Release gives it up early.
	Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	Release(ctx context.Context, name, holder string) error
	// Close releases the store; safe to call twice.
	Close(ctx context.Context) error
}

// MaxKey bounds keys and collection names, in bytes.
const MaxKey = 512

// CheckOps applies the rules every backend enforces on an Apply, so that
// all refuse the same things with the same errors.
func CheckOps(ops []Op) error {
	if len(ops) == 0 {
		return fmt.Errorf("%w: an Apply with no operation", ErrInvalid)
	}
	seen := make(map[[2]string]bool, len(ops))
	for i, op := range ops {
		if err := CheckName(op.Collection, op.Key); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if op.If < Always || op.If > AtVersion {
			return fmt.Errorf("%w: op %d (%s/%s): unknown condition %d", ErrInvalid, i, op.Collection, op.Key, op.If)
		}
		if op.If == AtVersion && op.Version == 0 {
			return fmt.Errorf("%w: op %d (%s/%s): AtVersion 0 (use Absent for a create)", ErrInvalid, i, op.Collection, op.Key)
		}
		k := [2]string{op.Collection, op.Key}
		if seen[k] {
			return fmt.Errorf("%w: op %d: %s/%s written twice in one Apply", ErrInvalid, i, op.Collection, op.Key)
		}
		seen[k] = true
	}
	return nil
}

// CheckName applies the rules on a collection and key: a collection of
// 1-64 bytes of lowercase letters, digits, '-' and '_', a key of 1 to
// MaxKey bytes without NUL.
func CheckName(coll, key string) error {
	if coll == "" || len(coll) > 64 {
		return fmt.Errorf("%w: collection %q: want 1-64 bytes", ErrInvalid, coll)
	}
	for _, c := range []byte(coll) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: collection %q: want lowercase letters, digits, '-' and '_'", ErrInvalid, coll)
		}
	}
	if key == "" || len(key) > MaxKey {
		return fmt.Errorf("%w: %s: key of %d bytes: want 1-%d", ErrInvalid, coll, len(key), MaxKey)
	}
	for _, c := range []byte(key) {
		if c == 0 {
			return fmt.Errorf("%w: %s: key %q holds a NUL byte", ErrInvalid, coll, key)
		}
	}
	return nil
}

// CheckLease applies the rules on a Lease or Release: a name as a key, a
// holder of 1 to MaxKey bytes, and (for a Lease; Release passes 1) a time
// above zero.
func CheckLease(name, holder string, ttl time.Duration) error {
	if err := CheckName("leases", name); err != nil {
		return err
	}
	if holder == "" || len(holder) > MaxKey {
		return fmt.Errorf("%w: lease %s: holder of %d bytes", ErrInvalid, name, len(holder))
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: lease %s for %v", ErrInvalid, name, ttl)
	}
	return nil
}

// ConflictError is the error of a failed condition.
func ConflictError(op Op, found uint64) error {
	switch {
	case op.If == Absent:
		return fmt.Errorf("%s/%s: %w: it exists (version %d)", op.Collection, op.Key, ErrConflict, found)
	case found == 0:
		return fmt.Errorf("%s/%s: %w: it does not exist (want version %d)", op.Collection, op.Key, ErrConflict, op.Version)
	default:
		return fmt.Errorf("%s/%s: %w: at version %d, not %d", op.Collection, op.Key, ErrConflict, found, op.Version)
	}
}

// Holds reports whether a condition holds for a record at version found
// (0: absent).
func Holds(op Op, found uint64) bool {
	switch op.If {
	case Absent:
		return found == 0
	case AtVersion:
		return found == op.Version
	}
	return true
}
