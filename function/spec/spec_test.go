package spec_test

import (
	"encoding/json"
	"errors"
	"strings"
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

// TestService: the service a spec names sets its executable's runtime API;
// a runtime API of the other service is refused, naming both.
func TestService(t *testing.T) {
	base := func(r spec.Runtime, svc spec.Service, api spec.API) spec.Function {
		return spec.Function{Name: "f", Version: "1", Runtime: r, Handler: "index.handler", CodeDir: "/code", Service: svc, API: api}
	}
	for _, c := range []struct {
		in      spec.Function
		svc     spec.Service
		api     spec.API
		refused string
	}{
		{base(spec.RuntimeExecutable, "", ""), spec.ServiceLambda, spec.APILambda, ""},
		{base(spec.RuntimeExecutable, spec.ServiceFC, ""), spec.ServiceFC, spec.APIFC, ""},
		{base(spec.RuntimeExecutable, "", spec.APIFC), spec.ServiceFC, spec.APIFC, ""},
		{base(spec.RuntimeNode, spec.ServiceFC, ""), spec.ServiceFC, spec.APINative, ""},
		{base(spec.RuntimePython, spec.ServiceFC, spec.APIFC), spec.ServiceFC, spec.APIFC, ""},
		{base(spec.RuntimeNode, "", spec.APILambda), spec.ServiceLambda, spec.APILambda, ""},
		{base(spec.RuntimeExecutable, spec.ServiceLambda, spec.APIFC), "", "", "fc is not the runtime API of service lambda"},
		{base(spec.RuntimeNode, spec.ServiceFC, spec.APILambda), "", "", "lambda is not the runtime API of service fc"},
		{base(spec.RuntimeNode, "gcf", ""), "", "", `service: "gcf"`},
	} {
		got, err := c.in.Resolve()
		if c.refused != "" {
			if !errors.Is(err, spec.ErrInvalid) || !strings.Contains(err.Error(), c.refused) {
				t.Errorf("%+v: %v, want a refusal saying %q", c.in, err, c.refused)
			}
			continue
		}
		if err != nil || got.Service != c.svc || got.API != c.api {
			t.Errorf("%+v: service %q api %q (%v), want %q %q", c.in, got.Service, got.API, err, c.svc, c.api)
		}
	}
	for _, k := range []string{"FC_ANYTHING", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_EXECUTION_ENV", "LAMBDA_RUNTIME_DIR", "_X_AMZN_TRACE_ID"} {
		s := base(spec.RuntimeNode, "", "")
		s.Env = map[string]string{k: "x"}
		if _, err := s.Resolve(); !errors.Is(err, spec.ErrInvalid) {
			t.Errorf("env %s: %v, want refused (the host sets it)", k, err)
		}
	}
	for _, k := range []string{"AWS_REGION", "TZ", "AWS_LAMBDA_LOG_LEVEL"} {
		s := base(spec.RuntimeNode, "", "")
		s.Env = map[string]string{k: "x"}
		if _, err := s.Resolve(); err != nil {
			t.Errorf("env %s: %v, want allowed", k, err)
		}
	}
}

// TestPermissions: the manifest's permissions read back as written, and
// patterns that cannot match are refused naming the field.
func TestPermissions(t *testing.T) {
	base := `{"name":"f","version":"1","runtime":"python","handler":"m.h","codeDir":"/x","permissions":`
	var s spec.Function
	if err := json.Unmarshal([]byte(base+`{"publish":["alerts/+/high"],"devices":["boiler-*"],"invoke":["g"]}}`), &s); err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve()
	if err != nil || r.Permissions.Publish[0] != "alerts/+/high" || !spec.Allows(r.Permissions.Devices, "boiler-7") || spec.Allows(r.Permissions.Devices, "meter-1") || !spec.Allows(r.Permissions.Invoke, "g") {
		t.Errorf("%+v %v", r.Permissions, err)
	}
	for body, field := range map[string]string{
		`{"devices":["boiler-["]}`: "devices[0]",
		`{"invoke":[""]}`:          "invoke[0]",
		`{"publish":[""]}`:         "publish[0]",
	} {
		var s spec.Function
		if err := json.Unmarshal([]byte(base+body+`}`), &s); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Resolve(); !errors.Is(err, spec.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", body, err, field)
		}
	}
	// Without permissions the field is left out of the manifest.
	if b, _ := json.Marshal(spec.Function{Name: "f"}); strings.Contains(string(b), "permissions") {
		t.Errorf("empty permissions written: %s", b)
	}
}
