// Package boltsafe runs go.etcd.io/bbolt transactions so that what bbolt
// answers with a panic (a page it cannot read) and its closed database
// come back as the caller's own errors. The gateway's state and the
// fleet's embedded store share it.
package boltsafe

import (
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// Update runs f in a read-write transaction of db.
func Update(db *bbolt.DB, damaged, closed error, f func(tx *bbolt.Tx) error) error {
	return Recovered(damaged, func() error { return closedErr(db.Update(f), closed) })
}

// View runs f in a read-only transaction of db.
func View(db *bbolt.DB, damaged, closed error, f func(tx *bbolt.Tx) error) error {
	return Recovered(damaged, func() error { return closedErr(db.View(f), closed) })
}

func closedErr(err, closed error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return closed
	}
	return err
}

// Recovered runs f, turning a panic into an error wrapping damaged.
func Recovered(damaged error, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", damaged, r)
		}
	}()
	return f()
}
