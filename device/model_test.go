package device_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
)

func boiler(t testing.TB) *device.Model {
	t.Helper()
	b, err := os.ReadFile("testdata/boiler.tsl.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := device.ParseTSL(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseTSL(t *testing.T) {
	m := boiler(t)
	if len(m.Properties) != 8 || len(m.Services) != 2 || len(m.Events) != 1 {
		t.Fatalf("model %+v", m)
	}
	temp, _ := m.Property("temperature")
	if temp.Access != device.ReadOnly || temp.Type.Kind != device.Float || *temp.Type.Min != -40 || *temp.Type.Max != 120 || temp.Type.Unit != "°C" {
		t.Errorf("temperature %+v", temp)
	}
	hist, _ := m.Property("history")
	if hist.Type.Size != 4 || hist.Type.Item.Kind != device.Double {
		t.Errorf("history %+v", hist.Type)
	}
	if s, _ := m.Service("selfTest"); s.Call != device.Sync || len(s.Output) != 1 {
		t.Errorf("selfTest %+v", s)
	}
	if e, _ := m.Event("overheat"); e.Level != device.Alert {
		t.Errorf("overheat %+v", e)
	}
}

// TestValues: values keep their types, JSON's numbers become the kind's
// type, and every refusal names the path and the reason.
func TestValues(t *testing.T) {
	m := boiler(t)
	decode := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ok := []struct {
		prop, json string
		want       any
	}{
		{"temperature", `21.5`, 21.5},
		{"setpoint", `55`, int64(55)},
		{"mode", `2`, int64(2)},
		{"power", `true`, true},
		{"power", `0`, false},
		{"serial", `"SN-0042"`, "SN-0042"},
		{"lastService", `"1764072000000"`, time.UnixMilli(1764072000000).UTC()},
		{"lastService", `"2025-11-25T12:00:00Z"`, time.Date(2025, 11, 25, 12, 0, 0, 0, time.UTC)},
	}
	for _, tc := range ok {
		got, err := m.PropertyValue(tc.prop, decode(tc.json))
		if err != nil || got != tc.want {
			t.Errorf("%s = %s: %#v, %v; want %#v", tc.prop, tc.json, got, err, tc.want)
		}
	}
	pump, err := m.PropertyValue("pump", decode(`{"rpm": 1200, "running": 1}`))
	if p, _ := pump.(map[string]any); err != nil || p["rpm"] != int64(1200) || p["running"] != true {
		t.Errorf("pump: %#v, %v", pump, err)
	}
	hist, err := m.PropertyValue("history", []float64{20, 21.5})
	if h, _ := hist.([]any); err != nil || len(h) != 2 || h[1] != 21.5 {
		t.Errorf("history: %#v, %v", hist, err)
	}

	bad := []struct{ prop, json, says string }{
		{"temperature", `130`, "properties.temperature: 130 above max 120"},
		{"temperature", `-41`, "properties.temperature: -41 below min -40"},
		{"temperature", `"hot"`, `properties.temperature: text "hot", want a number`},
		{"setpoint", `55.5`, "properties.setpoint: the number 55.5, want an integer"},
		{"setpoint", `57`, "properties.setpoint: 57 is not a multiple of step 5 from 30"},
		{"mode", `7`, "properties.mode: 7 is not one of the enum's values [0 1 2]"},
		{"power", `2`, "properties.power: the number 2, want true, false, 0 or 1"},
		{"serial", `"` + strings.Repeat("x", 17) + `"`, "properties.serial: 17 bytes, over the length 16"},
		{"lastService", `"yesterday"`, "properties.lastService: text \"yesterday\", want a time"},
		{"pump", `{"rpm": 5000}`, "properties.pump.rpm: 5000 above max 3000"},
		{"pump", `{"speed": 1}`, "properties.pump.speed: not in the model"},
		{"history", `[1, 2, 3, 4, 5]`, "properties.history: 5 items, over the size 4"},
		{"history", `[1, "x"]`, `properties.history[1]: text "x", want a number`},
		{"humidity", `50`, "properties.humidity: not in the model"},
		{"temperature", `null`, "properties.temperature: missing (null)"},
	}
	for _, tc := range bad {
		_, err := m.PropertyValue(tc.prop, decode(tc.json))
		if !errors.Is(err, device.ErrInvalidValue) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s = %s: %v; want ErrInvalidValue saying %q", tc.prop, tc.json, err, tc.says)
		}
	}
	if _, err := m.ServiceInput("reboot", map[string]any{"delay": 90.0}); err == nil || !strings.Contains(err.Error(), "services.reboot.inputData.delay: 90 above max 60") {
		t.Errorf("service input: %v", err)
	}
	if _, err := m.EventOutput("overheat", map[string]any{"temperature": 150.0}); err != nil {
		t.Errorf("event output: %v", err)
	}
	if _, err := m.ServiceInput("explode", nil); err == nil || !strings.Contains(err.Error(), "services.explode: not in the model") {
		t.Errorf("unknown service: %v", err)
	}
}

// TestMalformedTSL: each mistake is refused naming where it is.
func TestMalformedTSL(t *testing.T) {
	prop := func(dataType string) string {
		return `{"properties": [{"identifier": "p", "name": "P", "accessMode": "rw", "dataType": ` + dataType + `}]}`
	}
	for doc, says := range map[string]string{
		`{`:                         "unexpected EOF",
		`{"properties": {}}`:        "cannot unmarshal",
		prop(`{"type": "complex"}`): `properties[0].dataType.type: "complex"`,
		prop(`{"type": "int", "specs": {"min": "ten"}}`):                                             `properties[0].dataType.specs.min: "ten" is not a number`,
		prop(`{"type": "int", "specs": {"min": "10", "max": "1"}}`):                                  "properties.p.dataType: min 10 above max 1",
		prop(`{"type": "enum", "specs": {"zero": "off"}}`):                                           "properties[0].dataType.specs.zero: the key is not an integer",
		prop(`{"type": "enum", "specs": {}}`):                                                        "properties.p.dataType: an enum needs values",
		prop(`{"type": "text", "specs": {"length": "-1"}}`):                                          "properties[0].dataType.specs.length",
		prop(`{"type": "array", "specs": {"size": "3"}}`):                                            "properties[0].dataType.specs.item: missing",
		prop(`{"type": "struct", "specs": []}`):                                                      "properties.p.dataType: a struct needs fields",
		prop(`{"type": "struct", "specs": {"a": 1}}`):                                                "want an array of fields",
		`{"properties": [{"identifier": "9lives", "accessMode": "r", "dataType": {"type": "int"}}]}`: `properties[0].identifier: "9lives"`,
		`{"properties": [{"identifier": "a", "accessMode": "r", "dataType": {"type": "int"}}, {"identifier": "a", "accessMode": "r", "dataType": {"type": "int"}}]}`: `"a" appears twice`,
		`{"properties": [{"identifier": "a", "accessMode": "w", "dataType": {"type": "int"}}]}`:                                                                      `properties.a.accessMode: "w"`,
		`{"services": [{"identifier": "s", "callType": "later"}]}`:                                                                                                   `services.s.callType: "later"`,
		`{"events": [{"identifier": "e", "type": "panic"}]}`:                                                                                                         `events.e.type: "panic"`,
		prop(strings.Repeat(`{"type": "array", "specs": {"item": `, 12) + `{"type": "int"}` + strings.Repeat(`}}`, 12)):                                              "nested",
	} {
		_, err := device.ParseTSL([]byte(doc))
		if !errors.Is(err, device.ErrInvalidModel) || !strings.Contains(err.Error(), says) {
			t.Errorf("%.80s: %v; want ErrInvalidModel saying %q", doc, err, says)
		}
	}
}
