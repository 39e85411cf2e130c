package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/edgekit/edgekit/edge/app"
)

// Journal is where the gateway's deployments stand, written before each
// step of applying one so that a restart resumes from it.
type Journal struct {
	// Generation counts the journal's writes; the store sets it.
	Generation uint64 `json:"generation"`
	// Seen is the highest deployment revision taken (applied, rejected,
	// rolled back or superseded): one delivered again, as a retained
	// message is after each reconnect, is not taken twice.
	Seen uint64 `json:"seen,omitempty"`
	// Pending is the deployment being applied, until it is committed,
	// rolled back or superseded.
	Pending *app.Deployment `json:"pending,omitempty"`
	// Step is where Pending is (the reconciler's words: "fetching",
	// "applying", "probation", "rolling-back", ...).
	Step string `json:"step,omitempty"`
	// Attempt counts tries of Pending's current step.
	Attempt int `json:"attempt,omitempty"`
	// LastGood is the deployment last committed: what a rollback restores
	// and what runs while offline.
	LastGood *app.Deployment `json:"lastGood,omitempty"`
	// Status is the latest status of the newest deployment taken.
	Status *app.Status `json:"status,omitempty"`
	// Updated is when the journal was written.
	Updated time.Time `json:"updated"`
}

var journalSlots = [2][]byte{[]byte("a"), []byte("b")}

// Journal reads the journal: the newest slot that reads back, or the zero
// Journal for a new file. When a slot is damaged and the other is read, the
// damage is logged; when both are, the error wraps ErrDamaged.
func (s *Store) Journal() (Journal, error) {
	var best Journal
	var found bool
	var damaged []error
	err := s.view(func(tx *bbolt.Tx) error {
		for _, slot := range journalSlots {
			raw := tx.Bucket(bucketJournal).Get(slot)
			if raw == nil {
				continue
			}
			var j Journal
			if err := unseal(raw, &j); err != nil {
				damaged = append(damaged, fmt.Errorf("state: journal slot %s: %w", slot, err))
				continue
			}
			if !found || j.Generation > best.Generation {
				best, found = j, true
			}
		}
		return nil
	})
	if err != nil {
		return Journal{}, err
	}
	s.logDamage(damaged)
	if !found && len(damaged) > 0 {
		return Journal{}, errors.Join(damaged...)
	}
	return best, nil
}

// SaveJournal writes j as the next generation, into the slot the newest
// generation is not in, and returns it as written.
func (s *Store) SaveJournal(j Journal) (Journal, error) {
	err := s.update(func(tx *bbolt.Tx) error {
		var newest uint64
		for _, slot := range journalSlots {
			var old Journal
			if raw := tx.Bucket(bucketJournal).Get(slot); raw != nil && unseal(raw, &old) == nil && old.Generation > newest {
				newest = old.Generation
			}
		}
		j.Generation = newest + 1
		j.Updated = time.Now().UTC()
		return put(tx, bucketJournal, journalSlots[j.Generation%2], j)
	})
	if err != nil {
		return Journal{}, fmt.Errorf("state: saving the journal: %w", err)
	}
	return j, nil
}

// AppendHistory adds st to its app's status history, dropping the oldest
// past Options.HistoryPerApp.
func (s *Store) AppendHistory(st app.AppStatus) error {
	if st.App == "" {
		return errors.New("state: history: the status names no app")
	}
	err := s.update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(st.App))
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		rec, err := seal(st)
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), rec); err != nil {
			return err
		}
		// Keys are the sequence, only the oldest are deleted: those kept
		// run from the first key to seq.
		c := b.Cursor()
		for k, _ := c.First(); len(k) == 8 && seq-binary.BigEndian.Uint64(k) >= uint64(s.opts.HistoryPerApp); k, _ = c.First() {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: history of %s: %w", st.App, err)
	}
	return nil
}

// History returns up to max of the app's statuses, newest first (max ≤ 0:
// all kept). Damaged records are left out and reported in the error.
func (s *Store) History(appName string, max int) ([]app.AppStatus, error) {
	var out []app.AppStatus
	var damaged []error
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketHistory).Bucket([]byte(appName))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && (max <= 0 || len(out) < max); k, v = c.Prev() {
			var st app.AppStatus
			if err := unseal(v, &st); err != nil {
				damaged = append(damaged, fmt.Errorf("state: history of %s, record %d: %w", appName, binary.BigEndian.Uint64(k), err))
				continue
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.logDamage(damaged)
	return out, errors.Join(damaged...)
}

// Installed is a version of an app on the gateway's disk: a function
// package unpacked, or a container image pulled.
type Installed struct {
	App     string    `json:"app"`
	Kind    app.Kind  `json:"kind"`
	Version string    `json:"version"`
	SHA256  string    `json:"sha256,omitempty"` // a function package's archive digest
	Image   string    `json:"image,omitempty"`  // a container image reference
	At      time.Time `json:"at"`
}

func installedKey(appName, version string) []byte { return []byte(appName + "\x00" + version) }

// PutInstalled records an installed version.
func (s *Store) PutInstalled(in Installed) error {
	if in.App == "" || in.Version == "" {
		return errors.New("state: installed: an app and a version are required")
	}
	return s.update(func(tx *bbolt.Tx) error { return put(tx, bucketInstalled, installedKey(in.App, in.Version), in) })
}

// DeleteInstalled forgets an installed version.
func (s *Store) DeleteInstalled(appName, version string) error {
	return s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketInstalled).Delete(installedKey(appName, version)) })
}

// ListInstalled returns every installed version, by app then version.
func (s *Store) ListInstalled() ([]Installed, error) { return list[Installed](s, bucketInstalled) }

// TriggerState returns what the named trigger kept, or nil.
func (s *Store) TriggerState(name string) (json.RawMessage, error) {
	var out json.RawMessage
	err := s.view(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketTriggers).Get([]byte(name))
		if raw == nil {
			return nil
		}
		if err := unseal(raw, &out); err != nil {
			return fmt.Errorf("state: trigger %s: %w", name, err)
		}
		return nil
	})
	return out, err
}

// SetTriggerState keeps v (a JSON document) for the named trigger; nil
// forgets it.
func (s *Store) SetTriggerState(name string, v json.RawMessage) error {
	return s.update(func(tx *bbolt.Tx) error {
		if v == nil {
			return tx.Bucket(bucketTriggers).Delete([]byte(name))
		}
		return put(tx, bucketTriggers, []byte(name), v)
	})
}

// Device is one device in the registry: what the device manager needs to
// attach it again after a restart.
type Device struct {
	Name   string `json:"name"`
	Driver string `json:"driver"`
	// Model is the device's thing model (TSL JSON), Config the driver's
	// configuration of it, Poll its poll groups.
	Model  json.RawMessage `json:"model,omitempty"`
	Config json.RawMessage `json:"config,omitempty"`
	Poll   json.RawMessage `json:"poll,omitempty"`
	// Labels are what functions find the device by.
	Labels map[string]string `json:"labels,omitempty"`
}

// PutDevice adds or changes a device in the registry.
func (s *Store) PutDevice(d Device) error {
	if d.Name == "" || d.Driver == "" {
		return errors.New("state: device: a name and a driver are required")
	}
	return s.update(func(tx *bbolt.Tx) error { return put(tx, bucketDevices, []byte(d.Name), d) })
}

// DeleteDevice takes a device out of the registry.
func (s *Store) DeleteDevice(name string) error {
	return s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketDevices).Delete([]byte(name)) })
}

// Devices returns the registry, by name.
func (s *Store) Devices() ([]Device, error) { return list[Device](s, bucketDevices) }
