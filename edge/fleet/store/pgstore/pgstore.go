// Package pgstore is the fleet's store on PostgreSQL
// (github.com/jackc/pgx/v5), which several fleet replicas share.
//
// Three tables, created at Open when missing: the records (collection,
// key, version, value), the write sequence, and the leases. Every Apply is
// one transaction that first takes the next version from the sequence row:
// its row lock orders the writers, so versions are committed in the order
// they are handed out and a reader following Changes never sees a later
// version before an earlier one has committed. Leases are timed by the
// database's clock, the one clock every replica shares.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgekit/edgekit/edge/fleet/store"
)

// Options tune a Store. A nil *Options means the defaults.
type Options struct {
	// Prefix names the tables: Prefix+"records", +"seq", +"leases";
	// default "edgekit_fleet_". Letters, digits and '_'.
	Prefix string
	// MaxConns bounds the connection pool; default 8.
	MaxConns int32
}

// Store is a store.Store on PostgreSQL.
type Store struct {
	pool    *pgxpool.Pool
	records string
	seq     string
	leases  string
	closed  atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn (a libpq connection string or
// URL) and creates the tables when missing.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	o := Options{Prefix: "edgekit_fleet_", MaxConns: 8}
	if opts != nil {
		if opts.Prefix != "" {
			o.Prefix = opts.Prefix
		}
		if opts.MaxConns > 0 {
			o.MaxConns = opts.MaxConns
		}
	}
	for _, c := range o.Prefix {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return nil, fmt.Errorf("pgstore: %w: table prefix %q: want lowercase letters, digits and '_'", store.ErrInvalid, o.Prefix)
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	cfg.MaxConns = o.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := &Store{pool: pool, records: o.Prefix + "records", seq: o.Prefix + "seq", leases: o.Prefix + "leases"}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: creating the tables: %w", err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	// Replicas may start together: one creates, the others wait on the
	// advisory lock and find the tables there.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	for _, q := range []string{
		`SELECT pg_advisory_xact_lock(hashtext('` + s.records + `'))`,
		`CREATE TABLE IF NOT EXISTS ` + s.records + ` (coll text NOT NULL, key text NOT NULL, version bigint NOT NULL, value bytea NOT NULL, PRIMARY KEY (coll, key))`,
		`CREATE INDEX IF NOT EXISTS ` + s.records + `_changes ON ` + s.records + ` (coll, version, key)`,
		`CREATE TABLE IF NOT EXISTS ` + s.seq + ` (id int PRIMARY KEY, version bigint NOT NULL)`,
		`INSERT INTO ` + s.seq + ` (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`,
		`CREATE TABLE IF NOT EXISTS ` + s.leases + ` (name text PRIMARY KEY, holder text NOT NULL, until timestamptz NOT NULL)`,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

func (s *Store) check() error {
	if s.closed.Load() {
		return fmt.Errorf("pgstore: %w", store.ErrClosed)
	}
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, coll, key string) (store.Record, error) {
	if err := store.CheckName(coll, key); err != nil {
		return store.Record{}, err
	}
	if err := s.check(); err != nil {
		return store.Record{}, err
	}
	r := store.Record{Collection: coll, Key: key}
	err := s.pool.QueryRow(ctx, `SELECT version, value FROM `+s.records+` WHERE coll = $1 AND key = $2`, coll, key).Scan(&r.Version, &r.Value)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Record{}, fmt.Errorf("%s/%s: %w", coll, key, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("pgstore: get %s/%s: %w", coll, key, err)
	}
	return r, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, coll, prefix string) ([]store.Record, error) {
	if err := store.CheckName(coll, "-"); err != nil {
		return nil, err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	// COLLATE "C": byte order, as the other backends list. starts_with
	// takes the prefix as it is (LIKE would read % and _ in it).
	return s.query(ctx, coll, `SELECT key, version, value FROM `+s.records+` WHERE coll = $1 AND starts_with(key, $2) ORDER BY key COLLATE "C"`, coll, prefix)
}

// Changes implements store.Store.
func (s *Store) Changes(ctx context.Context, coll string, after uint64, limit int) ([]store.Record, error) {
	if err := store.CheckName(coll, "-"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("pgstore: %w: Changes limit %d", store.ErrInvalid, limit)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	out, err := s.query(ctx, coll, `SELECT key, version, value FROM `+s.records+` WHERE coll = $1 AND version > $2 ORDER BY version, key COLLATE "C" LIMIT $3`, coll, int64(after), limit)
	if err != nil || len(out) < limit {
		return out, err
	}
	// The rest of the last Apply's records: a reader resumes after the
	// last version it saw.
	last := out[len(out)-1]
	rest, err := s.query(ctx, coll, `SELECT key, version, value FROM `+s.records+` WHERE coll = $1 AND version = $2 AND key COLLATE "C" > $3 ORDER BY key COLLATE "C"`, coll, int64(last.Version), last.Key)
	return append(out, rest...), err
}

func (s *Store) query(ctx context.Context, coll, q string, args ...any) ([]store.Record, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s: %w", coll, err)
	}
	var out []store.Record
	for rows.Next() {
		r := store.Record{Collection: coll}
		if err := rows.Scan(&r.Key, &r.Version, &r.Value); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgstore: %s: %w", coll, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: %s: %w", coll, err)
	}
	return out, nil
}

// Apply implements store.Store: one transaction, three statements
// whatever the number of ops (the version, the conditions' current
// versions, one upsert of all).
func (s *Store) Apply(ctx context.Context, ops ...store.Op) (uint64, error) {
	if err := store.CheckOps(ops); err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	defer tx.Rollback(ctx)
	var version int64
	if err := tx.QueryRow(ctx, `UPDATE `+s.seq+` SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&version); err != nil {
		return 0, fmt.Errorf("pgstore: taking a version: %w", err)
	}
	colls, keys, values := make([]string, len(ops)), make([]string, len(ops)), make([][]byte, len(ops))
	var condColls, condKeys []string
	for i, op := range ops {
		colls[i], keys[i], values[i] = op.Collection, op.Key, op.Value
		if values[i] == nil {
			values[i] = []byte{}
		}
		if op.If != store.Always {
			condColls, condKeys = append(condColls, op.Collection), append(condKeys, op.Key)
		}
	}
	if len(condKeys) > 0 {
		found := make(map[[2]string]uint64, len(condKeys))
		rows, err := tx.Query(ctx, `SELECT r.coll, r.key, r.version FROM `+s.records+` r JOIN unnest($1::text[], $2::text[]) AS c(coll, key) ON r.coll = c.coll AND r.key = c.key FOR UPDATE OF r`, condColls, condKeys)
		if err != nil {
			return 0, fmt.Errorf("pgstore: %w", err)
		}
		for rows.Next() {
			var c, k string
			var v int64
			if err := rows.Scan(&c, &k, &v); err != nil {
				rows.Close()
				return 0, fmt.Errorf("pgstore: %w", err)
			}
			found[[2]string{c, k}] = uint64(v)
		}
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("pgstore: %w", err)
		}
		for _, op := range ops {
			if f := found[[2]string{op.Collection, op.Key}]; !store.Holds(op, f) {
				return 0, fmt.Errorf("pgstore: %w", store.ConflictError(op, f))
			}
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+s.records+` (coll, key, version, value) SELECT c, k, $3, v FROM unnest($1::text[], $2::text[], $4::bytea[]) AS u(c, k, v)
		ON CONFLICT (coll, key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value`, colls, keys, version, values); err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	return uint64(version), nil
}

// Lease implements store.Store.
func (s *Store) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if err := store.CheckLease(name, holder, ttl); err != nil {
		return false, err
	}
	if err := s.check(); err != nil {
		return false, err
	}
	var got string
	err := s.pool.QueryRow(ctx, `INSERT INTO `+s.leases+` (name, holder, until) VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
		WHERE `+s.leases+`.holder = EXCLUDED.holder OR `+s.leases+`.until <= clock_timestamp()
		RETURNING holder`, name, holder, ttl.Seconds()).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // held by another, not expired
	}
	if err != nil {
		return false, fmt.Errorf("pgstore: lease %s: %w", name, err)
	}
	return got == holder, nil
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, name, holder string) error {
	if err := store.CheckLease(name, holder, 1); err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM `+s.leases+` WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("pgstore: release %s: %w", name, err)
	}
	return nil
}

// Close implements store.Store: it waits for the connections in use to
// be given back, up to ctx.
func (s *Store) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	done := make(chan struct{})
	go func() { s.pool.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pgstore: close: queries under way: %w", ctx.Err())
	}
}
