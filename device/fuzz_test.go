package device_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/edgekit/edgekit/device"
)

// FuzzParseTSL: any document either parses into a model that passes Check
// and that MarshalTSL writes back as the same model, or is refused with
// ErrInvalidModel; nothing panics.
func FuzzParseTSL(f *testing.F) {
	if b, err := os.ReadFile("testdata/boiler.tsl.json"); err == nil {
		f.Add(b)
	}
	for _, seed := range []string{`{}`, `{"properties":[{"identifier":"a","accessMode":"r","dataType":{"type":"array","specs":{"size":"2","item":{"type":"struct","specs":[{"identifier":"x","dataType":{"type":"enum","specs":{"1":"one"}}}]}}}}]}`,
		`{"services":[{"identifier":"s","callType":"sync","inputData":[{"identifier":"i","dataType":{"type":"text","specs":{"length":3}}}]}]}`,
		`{"properties":[{"identifier":"t","accessMode":"rw","dataType":{"type":"double","specs":{"min":1e308,"max":"-1e308"}}}]}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := device.ParseTSL(doc)
		if err != nil {
			if !errors.Is(err, device.ErrInvalidModel) {
				t.Fatalf("error %v does not wrap ErrInvalidModel", err)
			}
			return
		}
		if err := m.Check(); err != nil {
			t.Fatalf("a parsed model fails Check: %v", err)
		}
		out, err := m.MarshalTSL()
		if err != nil {
			t.Fatalf("MarshalTSL: %v", err)
		}
		again, err := device.ParseTSL(out)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("MarshalTSL wrote %s, which parses as %+v, %v; want %+v", out, again, err, m)
		}
	})
}

// FuzzPropertyValue: any JSON value for any property of the example model
// is accepted in its canonical type, which is accepted again unchanged, or
// refused with ErrInvalidValue; nothing panics.
func FuzzPropertyValue(f *testing.F) {
	m := boiler(f)
	for _, seed := range []struct{ prop, value string }{
		{"temperature", `21.5`}, {"setpoint", `55`}, {"mode", `1`}, {"power", `1`}, {"serial", `"SN"`},
		{"lastService", `"1764072000000"`}, {"pump", `{"rpm":1,"running":false}`}, {"history", `[1,2]`}, {"history", `[1e400]`},
	} {
		f.Add(seed.prop, seed.value)
	}
	f.Fuzz(func(t *testing.T, prop, value string) {
		var v any
		if json.Unmarshal([]byte(value), &v) != nil {
			return
		}
		got, err := m.PropertyValue(prop, v)
		if err != nil {
			if !errors.Is(err, device.ErrInvalidValue) {
				t.Fatalf("error %v does not wrap ErrInvalidValue", err)
			}
			return
		}
		again, err := m.PropertyValue(prop, got)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("%s = %s: canonical %#v checks again as %#v, %v", prop, value, got, again, err)
		}
	})
}
