package state

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// TestMigration: a file of an older schema is migrated forward in a
// transaction per step; a step that fails leaves the file as it was; a
// file of a newer schema is refused.
func TestMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := open(path, nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(Device{Name: "boiler", Driver: "modbus"}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())

	// Schema 2 keeps the registry under "registry" instead of "devices".
	toRegistry := func(tx *bbolt.Tx) error {
		reg, err := tx.CreateBucket([]byte("registry"))
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error { return reg.Put(k, v) }); err != nil {
			return err
		}
		return tx.DeleteBucket(bucketDevices)
	}
	failing := func(tx *bbolt.Tx) error {
		if err := toRegistry(tx); err != nil {
			return err
		}
		return errors.New("disk full")
	}
	if _, err := open(path, nil, 2, []migration{failing}); err == nil {
		t.Fatal("a failing migration opened the file")
	}
	s, err = open(path, nil, 1, nil)
	if err != nil {
		t.Fatalf("the file after a failed migration: %v", err)
	}
	if ds, err := s.Devices(); err != nil || len(ds) != 1 {
		t.Errorf("the registry after a failed migration: %+v %v", ds, err)
	}
	_ = s.Close(context.Background())

	s, err = open(path, nil, 2, []migration{toRegistry})
	if err != nil {
		t.Fatal(err)
	}
	var moved []byte
	_ = s.view(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketDevices) != nil {
			t.Error("the old bucket is still there")
		}
		if b := tx.Bucket([]byte("registry")); b != nil {
			moved = b.Get([]byte("boiler"))
		}
		return nil
	})
	var d Device
	if err := unseal(moved, &d); err != nil || d.Driver != "modbus" {
		t.Errorf("the record after the migration: %+v %v", d, err)
	}
	_ = s.Close(context.Background())

	if _, err := open(path, nil, 1, nil); !errors.Is(err, ErrSchema) {
		t.Errorf("a schema 2 file opened by schema 1 code: %v, want ErrSchema", err)
	}
	// Reopened at schema 2 it needs no migration.
	s, err = open(path, nil, 2, []migration{func(*bbolt.Tx) error { t.Error("migrated twice"); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())
}
