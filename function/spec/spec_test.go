package spec_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgekit/edgekit/function/spec"
)

// FuzzSpecJSON: a manifest's spec, parsed and checked, never panics; a
// spec that passes survives a round trip unchanged.
func FuzzSpecJSON(f *testing.F) {
	f.Add([]byte(`{"name":"f","version":"1","runtime":"go","handler":"h"}`))
	f.Add([]byte(`{"name":"f","version":"1","runtime":"executable","handler":"bootstrap","codeDir":"/x","api":"fc","mode":"continuous","minInstances":2,"timeout":"3s","config":{"a":[1,2]}}`))
	f.Add([]byte(`{"name":"../x","version":"","runtime":"nodejs","timeout":"-1s"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s spec.Function
		if err := json.Unmarshal(b, &s); err != nil {
			return
		}
		v, err := s.Resolve()
		if err != nil {
			if !errors.Is(err, spec.ErrInvalid) {
				t.Fatalf("error %v does not wrap spec.ErrInvalid", err)
			}
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back spec.Function
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("re-reading %s: %v", out, err)
		}
		again, err := back.Resolve()
		if err != nil {
			t.Fatalf("a valid spec became invalid after a round trip: %v (%s)", err, out)
		}
		a, _ := json.Marshal(again)
		if string(a) != string(out) {
			t.Fatalf("round trip changed the spec:\n%s\n%s", out, a)
		}
	})
}
