package app_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
)

func example(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/deployment.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseDeployment: the documented example reads, survives a round
// trip, and resolves its configuration.
func TestParseDeployment(t *testing.T) {
	d, err := app.ParseDeployment(example(t))
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "rollout-42" || d.Revision != 7 || len(d.Apps) != 3 || d.Apps[0].Version.Function.Package.Size != 4213 {
		t.Errorf("parsed %+v", d)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	again, err := app.ParseDeployment(out)
	if err != nil {
		t.Fatalf("re-reading %s: %v", out, err)
	}
	if b, _ := json.Marshal(again); string(b) != string(out) {
		t.Errorf("a round trip changed the document:\n%s\n%s", out, b)
	}
	cfg, err := d.Apps[0].Resolve()
	if err != nil || string(cfg) != `{"notify":{"topic":"alarms/boiler"},"threshold":90}` {
		t.Errorf("temp-alarm's configuration: %s %v", cfg, err)
	}
	if cfg, err := d.Apps[1].Resolve(); err != nil || string(cfg) != `{}` {
		t.Errorf("db's configuration, which has no default: %s %v", cfg, err)
	}
}

// TestBadDeployments: every broken rule is refused, naming the field.
func TestBadDeployments(t *testing.T) {
	base := string(example(t))
	for _, tc := range []struct {
		from, to string
		want     error
		says     string
	}{
		{`"schema": 1`, `"schema": 2`, app.ErrSchema, "schema 2"},
		{`"revision": 7`, `"revision": 0`, app.ErrInvalid, "revision"},
		{`"id": "rollout-42"`, `"id": "../x"`, app.ErrInvalid, "id"},
		{`"kind": "function"`, `"kind": "lambda"`, app.ErrInvalid, `apps[0] (temp-alarm).app.kind: "lambda"`},
		{`"name": "temp-alarm"`, `"name": "web"`, app.ErrInvalid, `apps[2].app.name: "web" appears twice`},
		{`"name": "temp-alarm"`, `"name": "temp alarm"`, app.ErrInvalid, "apps[0].app.name"},
		{`"version": "1.2.0"`, `"version": ""`, app.ErrInvalid, "apps[0] (temp-alarm).version.version"},
		{`"sha256": "9f86d0`, `"sha256": "zz86d0`, app.ErrInvalid, "version.function.package.sha256"},
		{`"url": "https://packages.example.com`, `"url": "ftp://packages.example.com`, app.ErrInvalid, `package.url: scheme "ftp"`},
		{`"url": "https://packages.example.com`, `"url": "https://user:pw@packages.example.com`, app.ErrInvalid, "credentials"},
		{`"name": "hourly"`, `"name": "on-temperature"`, app.ErrInvalid, `triggers[1].name: "on-temperature" appears twice`},
		{`"type": "timer"`, `"type": ""`, app.ErrInvalid, "triggers[1].type"},
		{`"restart": "always"`, `"restart": "sometimes"`, app.ErrInvalid, "container.restart"},
		{`"after": ["db"]`, `"after": ["temp-alarm"]`, app.ErrInvalid, `after[0]: "temp-alarm" is not a container app`},
		{`"after": ["db"]`, `"after": ["cache"]`, app.ErrInvalid, `"cache" is not a container app`},
		{`"restart": "always"`, `"restart": "always", "after": ["web"]`, app.ErrInvalid, "cycle: db -> web -> db"},
		{`"image": "localhost/edgekit-web:3"`, `"image": "localhost/web@md5:1"`, app.ErrInvalid, "container.image"},
		{`"type": "volume"`, `"type": "overlay"`, app.ErrInvalid, "spec.mounts[0].type"},
		{`"source": "db-data"`, `"source": "../etc"`, app.ErrInvalid, "spec.mounts[0].source"},
		{`"tcp": "127.0.0.1:5432"`, `"tcp": "127.0.0.1:5432", "exec": ["true"]`, app.ErrInvalid, "exactly one"},
		{`"config": {"title": "Boiler room"}`, `"config": [1, 2]`, app.ErrInvalid, "version.config: want a JSON object"},
		{`"reset": []`, `"reset": ["threshold"]`, app.ErrInvalid, "config.reset[0]"},
		{`"probation": "20s"`, `"probation": "soon"`, app.ErrInvalid, "soon"},
		{`"probation": "20s"`, `"probation": "20s", "privileged": true`, app.ErrInvalid, `unknown field "privileged"`},
		{`"memoryBytes": 134217728`, `"memoryBytes": 134217728, "privileged": true`, app.ErrInvalid, `unknown field "privileged"`},
		{`"function": {`, `"container": {"image": "x"}, "function": {`, app.ErrInvalid, "has function and no container"},
	} {
		doc := strings.Replace(base, tc.from, tc.to, 1)
		if doc == base {
			t.Fatalf("%q is not in the example", tc.from)
		}
		_, err := app.ParseDeployment([]byte(doc))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s → %s: %v, want %v naming %q", tc.from, tc.to, err, tc.want, tc.says)
		}
	}
	for doc, says := range map[string]string{
		``:                         "not a JSON object",
		`[]`:                       "not a JSON object",
		`{"schema": 1} {}`:         "after top-level value",
		strings.Repeat(" ", 5<<20): "bytes, more than",
	} {
		if _, err := app.ParseDeployment([]byte(doc)); !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), says) {
			t.Errorf("%.20q: %v, want ErrInvalid naming %q", doc, err, says)
		}
	}
}

// TestMergePatch: the examples of RFC 7396, appendix A.
func TestMergePatch(t *testing.T) {
	for _, tc := range [][3]string{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	} {
		var target, patch any
		_ = json.Unmarshal([]byte(tc[0]), &target)
		_ = json.Unmarshal([]byte(tc[1]), &patch)
		got, _ := json.Marshal(app.MergePatch(target, patch))
		if string(got) != tc[2] {
			t.Errorf("%s + %s = %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
}

// TestReset: reset pointers put the default's values back, or remove what
// the default lacks; "~1" and "~0" escape '/' and '~'.
func TestReset(t *testing.T) {
	a := app.Assignment{
		App:     app.App{Name: "f", Kind: app.KindFunction},
		Version: app.Version{Config: json.RawMessage(`{"limits": {"max": 10, "min": 1}, "a/b": 1, "x~": 2}`)},
		Config: app.Config{Overrides: json.RawMessage(`{"limits": {"max": 50, "min": 5, "extra": true}, "a/b": 9, "x~": 8, "new": 1}`),
			Reset: []string{"/limits/max", "/limits/extra", "/a~1b", "/x~0", "/missing/deeper"}},
	}
	got, err := a.Resolve()
	if err != nil || string(got) != `{"a/b":1,"limits":{"max":10,"min":5},"new":1,"x~":2}` {
		t.Errorf("Resolve: %s %v", got, err)
	}
	a.Config.Overrides = json.RawMessage(`[1]`)
	a.Config.Reset = nil
	if _, err := a.Resolve(); !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), "stay a JSON object") {
		t.Errorf("overrides that replace the object: %v", err)
	}
	a.Config.Overrides = json.RawMessage(strings.Repeat("[", 100) + strings.Repeat("]", 100))
	if _, err := a.Resolve(); !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), "deeper") {
		t.Errorf("overrides nested 100 deep: %v", err)
	}
}

// FuzzParseDeployment: any bytes are read or refused with ErrInvalid or
// ErrSchema, never a panic; what is read survives a round trip and checks
// again, and its configurations resolve or are refused with ErrInvalid.
func FuzzParseDeployment(f *testing.F) {
	f.Add(example(f))
	f.Add([]byte(`{"schema":1,"id":"a","revision":1,"apps":[]}`))
	f.Add([]byte(`{"schema":1,"id":"a","revision":1,"apps":[{"app":{"name":"c","kind":"container"},"version":{"version":"1","container":{"image":"x","after":["c"]}}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := app.ParseDeployment(b)
		if err != nil {
			if !errors.Is(err, app.ErrInvalid) && !errors.Is(err, app.ErrSchema) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrSchema", err)
			}
			return
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := app.ParseDeployment(out); err != nil {
			t.Fatalf("a document that was read is refused after a round trip: %v\n%s", err, out)
		}
		for _, a := range d.Apps {
			if _, err := a.Resolve(); err != nil && !errors.Is(err, app.ErrInvalid) {
				t.Fatalf("Resolve: %v", err)
			}
		}
	})
}

// FuzzMergePatch: a merge patch applied twice gives what it gave once
// (RFC 7396 patches are idempotent), and never panics.
func FuzzMergePatch(f *testing.F) {
	f.Add([]byte(`{"a":{"b":"c"}}`), []byte(`{"a":{"b":"d","c":null}}`))
	f.Add([]byte(`[1]`), []byte(`{"a":null,"b":[{"c":null}]}`))
	f.Fuzz(func(t *testing.T, target, patch []byte) {
		var tv, pv any
		if json.Unmarshal(target, &tv) != nil || json.Unmarshal(patch, &pv) != nil {
			return
		}
		once, _ := json.Marshal(app.MergePatch(tv, pv))
		var again any
		_ = json.Unmarshal(once, &again)
		var pv2 any
		_ = json.Unmarshal(patch, &pv2)
		twice, _ := json.Marshal(app.MergePatch(again, pv2))
		if string(once) != string(twice) {
			t.Fatalf("applying %s twice: %s then %s", patch, once, twice)
		}
	})
}

func TestDiffPatch(t *testing.T) {
	dec := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct{ from, to string }{
		{`{"a":1,"b":{"c":2,"d":3},"e":[1,2]}`, `{"a":1,"b":{"c":5},"e":[1],"f":{"g":true}}`},
		{`{"a":{"b":1}}`, `{"a":7}`},
		{`{"a":7}`, `{"a":{"b":1}}`},
		{`{}`, `{"x":"y"}`},
		{`{"x":"y"}`, `{}`},
		{`{"same":{"deep":[1,{"a":2}]}}`, `{"same":{"deep":[1,{"a":2}]}}`},
	} {
		patch := app.DiffPatch(dec(c.from), dec(c.to))
		got, _ := json.Marshal(app.MergePatch(dec(c.from), patch))
		want, _ := json.Marshal(dec(c.to))
		if string(got) != string(want) {
			p, _ := json.Marshal(patch)
			t.Errorf("DiffPatch(%s, %s) = %s, which gives %s", c.from, c.to, p, got)
		}
	}
	if p, _ := json.Marshal(app.DiffPatch(dec(`{"a":1}`), dec(`{"a":1}`))); string(p) != `{}` {
		t.Errorf("the patch between equal documents is %s, want {}", p)
	}
}

// TestDriverDevices: devices are bound to driver apps only, each named once
// on the gateway, each with a thing model.
func TestDriverDevices(t *testing.T) {
	drv := func(name string, driver bool, devs ...app.Device) app.Assignment {
		return app.Assignment{App: app.App{Name: name, Kind: app.KindFunction},
			Version: app.Version{Version: "1", Function: &app.FunctionVersion{Driver: driver, Package: app.Artifact{URL: "file:///p.tgz", SHA256: strings.Repeat("0", 64)}}},
			Devices: devs}
	}
	tsl := json.RawMessage(`{"properties": []}`)
	for _, tc := range []struct {
		apps []app.Assignment
		says string
	}{
		{[]app.Assignment{drv("a", true, app.Device{Name: "t1", TSL: tsl}), drv("b", true, app.Device{Name: "t2", TSL: tsl})}, ""},
		{[]app.Assignment{drv("a", false, app.Device{Name: "t1", TSL: tsl})}, "apps[0] (a).devices: only a driver app"},
		{[]app.Assignment{drv("a", true, app.Device{Name: "t1", TSL: tsl}, app.Device{Name: "t1", TSL: tsl})}, `devices[1].name: "t1" appears twice`},
		{[]app.Assignment{drv("a", true, app.Device{Name: "t1", TSL: tsl}), drv("b", true, app.Device{Name: "t1", TSL: tsl})}, `apps[1].devices[0].name: "t1" is a's already`},
		{[]app.Assignment{drv("a", true, app.Device{Name: "../t1", TSL: tsl})}, "devices[0].name"},
		{[]app.Assignment{drv("a", true, app.Device{Name: "t1"})}, "devices[0].tsl: want the thing model"},
		{[]app.Assignment{drv("a", true, app.Device{Name: "t1", TSL: tsl, Config: json.RawMessage(`[1]`)})}, "devices[0].config: want a JSON object"},
	} {
		err := (&app.Deployment{Schema: 1, ID: "d", Revision: 1, Apps: tc.apps}).Check()
		switch {
		case tc.says == "" && err != nil:
			t.Errorf("%+v: %v", tc.apps, err)
		case tc.says != "" && (!errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), tc.says)):
			t.Errorf("%v, want ErrInvalid naming %q", err, tc.says)
		}
	}
}

// TestFunctionSettings: Link IoT Edge's function settings make the manifest
// of a package that holds none, and what they cannot be is refused.
func TestFunctionSettings(t *testing.T) {
	st := app.FunctionSettings{Runtime: "nodejs10", RunMode: "LongLived", MemorySize: 64, Environment: map[string]string{"A": "b"}}
	m := st.Manifest("link", "1")
	if m.Runtime != "nodejs" || m.Handler != "index.handler" || m.Mode != "continuous" || m.Service != "fc" || m.MemoryLimitMB != 64 || m.Env["A"] != "b" {
		t.Errorf("manifest %+v", m)
	}
	if m := (&app.FunctionSettings{Runtime: "python3"}).Manifest("p", "1"); m.Runtime != "python" || m.Mode != "on-demand" {
		t.Errorf("python3: %+v", m)
	}
	for _, tc := range []struct {
		settings app.FunctionSettings
		says     string
	}{
		{app.FunctionSettings{Runtime: "java8"}, `settings.runtime: "java8"`},
		{app.FunctionSettings{Runtime: "nodejs", RunMode: "Sometimes"}, `settings.runMode: "Sometimes"`},
		{app.FunctionSettings{Runtime: "python3", MemorySize: -1}, "settings.memorySize"},
	} {
		a := app.Assignment{App: app.App{Name: "a", Kind: app.KindFunction},
			Version: app.Version{Version: "1", Function: &app.FunctionVersion{Settings: &tc.settings, Package: app.Artifact{URL: "file:///p.zip", SHA256: strings.Repeat("0", 64)}}}}
		err := (&app.Deployment{Schema: 1, ID: "d", Revision: 1, Apps: []app.Assignment{a}}).Check()
		if !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%+v: %v, want ErrInvalid naming %q", tc.settings, err, tc.says)
		}
	}
}
