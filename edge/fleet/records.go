package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/edgekit/edgekit/edge/fleet/store"
)

// The store's collections.
const (
	collApps        = "apps"
	collVersions    = "versions"    // app/version
	collGroups      = "groups"      //
	collConfigs     = "configs"     // app/scope
	collInstances   = "instances"   //
	collReports     = "reports"     // instance
	collDesired     = "desired"     // instance
	collDeployments = "deployments" //
	collTargets     = "targets"     // deployment/instance
	collHistory     = "history"     // instance/slot (a ring of statuses)
	collUsers       = "users"       //
	collSecrets     = "secrets"     //
	collAudit       = "audit"       // day/time-random
)

// record is a decoded store record.
type record[T any] struct {
	v       T
	version uint64
}

func get[T any](ctx context.Context, st store.Store, coll, key string) (record[T], error) {
	r, err := st.Get(ctx, coll, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return record[T]{}, fmt.Errorf("%w: %s %s", ErrNotFound, singular(coll), key)
		}
		return record[T]{}, err
	}
	var v T
	if err := json.Unmarshal(r.Value, &v); err != nil {
		return record[T]{}, fmt.Errorf("%s %s: %w: %v", singular(coll), key, store.ErrDamaged, err)
	}
	return record[T]{v: v, version: r.Version}, nil
}

// decodeAll decodes records, skipping (and reporting to bad) any that
// does not decode: one damaged record costs that record.
func decodeAll[T any](rs []store.Record, bad func(store.Record, error)) []record[T] {
	out := make([]record[T], 0, len(rs))
	for _, r := range rs {
		var v T
		if err := json.Unmarshal(r.Value, &v); err != nil {
			bad(r, err)
			continue
		}
		out = append(out, record[T]{v: v, version: r.Version})
	}
	return out
}

func list[T any](ctx context.Context, st store.Store, coll, prefix string, bad func(store.Record, error)) ([]record[T], error) {
	rs, err := st.List(ctx, coll, prefix)
	if err != nil {
		return nil, err
	}
	return decodeAll[T](rs, bad), nil
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fleet: encoding %T: %v", v, err)) // only plain types are stored
	}
	return b
}

func singular(coll string) string {
	switch coll {
	case collApps:
		return "app"
	case collVersions:
		return "version"
	case collGroups:
		return "group"
	case collConfigs:
		return "configuration override"
	case collInstances:
		return "instance"
	case collReports:
		return "report of instance"
	case collDesired:
		return "desired document of instance"
	case collDeployments:
		return "deployment"
	case collTargets:
		return "target"
	case collHistory:
		return "status history of instance"
	case collUsers:
		return "user"
	case collAudit:
		return "audit entry"
	}
	return coll
}
