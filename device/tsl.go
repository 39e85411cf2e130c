package device

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// The TSL JSON shape (Alibaba's thing model): top-level properties,
// services and events; every data type as {"type", "specs"}, with numbers
// in specs given as strings or numbers. Other fields (schema, profile,
// desc, method, required) are read past.
type (
	tslDoc struct {
		Properties []tslProperty `json:"properties"`
		Services   []tslService  `json:"services"`
		Events     []tslEvent    `json:"events"`
	}
	tslProperty struct {
		Identifier string  `json:"identifier"`
		Name       string  `json:"name"`
		AccessMode string  `json:"accessMode"`
		DataType   tslType `json:"dataType"`
	}
	tslService struct {
		Identifier string     `json:"identifier"`
		Name       string     `json:"name"`
		CallType   string     `json:"callType"`
		InputData  []tslParam `json:"inputData"`
		OutputData []tslParam `json:"outputData"`
	}
	tslEvent struct {
		Identifier string     `json:"identifier"`
		Name       string     `json:"name"`
		Type       string     `json:"type"`
		OutputData []tslParam `json:"outputData"`
	}
	tslParam struct {
		Identifier string  `json:"identifier"`
		Name       string  `json:"name"`
		DataType   tslType `json:"dataType"`
	}
	tslType struct {
		Type  string          `json:"type"`
		Specs json.RawMessage `json:"specs"`
	}
)

// MaxTSL bounds a TSL document.
const MaxTSL = 4 << 20

// ParseTSL reads a thing model from TSL JSON and checks it (Model.Check).
// Errors wrap ErrInvalidModel and name the path.
func ParseTSL(data []byte) (*Model, error) {
	if len(data) > MaxTSL {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrInvalidModel, len(data), MaxTSL)
	}
	var doc tslDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidModel, err)
	}
	m := &Model{}
	for i, p := range doc.Properties {
		t, err := p.DataType.convert(fmt.Sprintf("properties[%d]", i), 0)
		if err != nil {
			return nil, err
		}
		access := Access(p.AccessMode)
		if access == "" {
			access = ReadWrite
		}
		m.Properties = append(m.Properties, Property{Identifier: p.Identifier, Name: p.Name, Access: access, Type: t})
	}
	for i, s := range doc.Services {
		path := fmt.Sprintf("services[%d]", i)
		in, err := convertParams(path+".inputData", s.InputData, 0)
		if err != nil {
			return nil, err
		}
		out, err := convertParams(path+".outputData", s.OutputData, 0)
		if err != nil {
			return nil, err
		}
		call := CallType(s.CallType)
		if call == "" {
			call = Async
		}
		m.Services = append(m.Services, Service{Identifier: s.Identifier, Name: s.Name, Call: call, Input: in, Output: out})
	}
	for i, e := range doc.Events {
		out, err := convertParams(fmt.Sprintf("events[%d].outputData", i), e.OutputData, 0)
		if err != nil {
			return nil, err
		}
		m.Events = append(m.Events, Event{Identifier: e.Identifier, Name: e.Name, Level: EventLevel(e.Type), Output: out})
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return m, nil
}

func convertParams(path string, ps []tslParam, depth int) ([]Param, error) {
	var out []Param
	for i, p := range ps {
		t, err := p.DataType.convert(fmt.Sprintf("%s[%d]", path, i), depth)
		if err != nil {
			return nil, err
		}
		out = append(out, Param{Identifier: p.Identifier, Name: p.Name, Type: t})
	}
	return out, nil
}

// convert turns a TSL data type into a DataType; path names its owner.
func (tt tslType) convert(path string, depth int) (DataType, error) {
	path += ".dataType"
	if depth > maxDepth {
		return DataType{}, fmt.Errorf("%w: %s: nested more than %d deep", ErrInvalidModel, path, maxDepth)
	}
	t := DataType{Kind: Kind(tt.Type)}
	bad := func(field, format string, args ...any) (DataType, error) {
		return DataType{}, fmt.Errorf("%w: %s.specs%s: %s", ErrInvalidModel, path, field, fmt.Sprintf(format, args...))
	}
	specs := bytes.TrimSpace(tt.Specs)
	if len(specs) == 0 || string(specs) == "null" {
		specs = []byte("{}")
	}
	switch t.Kind {
	case Int, Float, Double, Text, Array, Date:
		var sp map[string]json.RawMessage
		if err := json.Unmarshal(specs, &sp); err != nil {
			return bad("", "want an object: %v", err)
		}
		num := func(key string) (*float64, error) {
			raw, ok := sp[key]
			if !ok || string(raw) == `""` || string(raw) == "null" {
				return nil, nil
			}
			f, err := number(raw)
			if err != nil {
				return nil, fmt.Errorf("%w: %s.specs.%s: %v", ErrInvalidModel, path, key, err)
			}
			return &f, nil
		}
		count := func(key string) (int, error) {
			f, err := num(key)
			if err != nil || f == nil {
				return 0, err
			}
			if *f < 0 || *f != math.Trunc(*f) || *f > math.MaxInt32 {
				return 0, fmt.Errorf("%w: %s.specs.%s: %g, want a whole number ≥ 0", ErrInvalidModel, path, key, *f)
			}
			return int(*f), nil
		}
		var err error
		switch t.Kind {
		case Int, Float, Double:
			if t.Min, err = num("min"); err != nil {
				return DataType{}, err
			}
			if t.Max, err = num("max"); err != nil {
				return DataType{}, err
			}
			step, err := num("step")
			if err != nil {
				return DataType{}, err
			}
			if step != nil {
				t.Step = *step
			}
			if raw, ok := sp["unit"]; ok {
				_ = json.Unmarshal(raw, &t.Unit)
			}
		case Text:
			if t.MaxLength, err = count("length"); err != nil {
				return DataType{}, err
			}
		case Array:
			if t.Size, err = count("size"); err != nil {
				return DataType{}, err
			}
			raw, ok := sp["item"]
			if !ok {
				return bad(".item", "missing")
			}
			var item tslType
			if err := json.Unmarshal(raw, &item); err != nil {
				return bad(".item", "%v", err)
			}
			it, err := item.convert(path+".specs.item", depth+1)
			if err != nil {
				return DataType{}, err
			}
			t.Item = &it
		}
	case Bool, Enum:
		var sp map[string]string
		if err := json.Unmarshal(specs, &sp); err != nil {
			return bad("", "want an object of value: label: %v", err)
		}
		t.Values = make(map[int64]string, len(sp))
		for k, label := range sp {
			n, err := strconv.ParseInt(k, 10, 64)
			if err != nil {
				return bad("."+k, "the key is not an integer")
			}
			t.Values[n] = label
		}
		if t.Kind == Bool {
			t.Values = nil // labels only; the values are true and false
		}
	case Struct:
		var fields []tslParam
		if err := json.Unmarshal(specs, &fields); err != nil {
			return bad("", "want an array of fields: %v", err)
		}
		var err error
		if t.Fields, err = convertParams(path+".specs", fields, depth+1); err != nil {
			return DataType{}, err
		}
	default:
		return DataType{}, fmt.Errorf("%w: %s.type: %q, want int, float, double, bool, text, enum, date, struct or array", ErrInvalidModel, path, tt.Type)
	}
	return t, nil
}

// number reads a spec number given as a JSON number or a string.
func number(raw json.RawMessage) (float64, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, fmt.Errorf("%s is not a number", raw)
	}
	return f, nil
}

// MarshalTSL writes the model as TSL JSON, the form ParseTSL reads: what
// an out-of-process driver is handed (a bool's labels, which the model
// does not keep, are not written).
func (m *Model) MarshalTSL() ([]byte, error) {
	doc := tslDoc{Properties: []tslProperty{}, Services: []tslService{}, Events: []tslEvent{}}
	for _, p := range m.Properties {
		doc.Properties = append(doc.Properties, tslProperty{Identifier: p.Identifier, Name: p.Name, AccessMode: string(p.Access), DataType: p.Type.tsl()})
	}
	for _, s := range m.Services {
		doc.Services = append(doc.Services, tslService{Identifier: s.Identifier, Name: s.Name, CallType: string(s.Call), InputData: tslParams(s.Input), OutputData: tslParams(s.Output)})
	}
	for _, e := range m.Events {
		doc.Events = append(doc.Events, tslEvent{Identifier: e.Identifier, Name: e.Name, Type: string(e.Level), OutputData: tslParams(e.Output)})
	}
	return json.Marshal(doc)
}

func tslParams(ps []Param) []tslParam {
	out := []tslParam{}
	for _, p := range ps {
		out = append(out, tslParam{Identifier: p.Identifier, Name: p.Name, DataType: p.Type.tsl()})
	}
	return out
}

// tsl is the data type in TSL's {"type", "specs"} form, numbers as
// strings as the platform writes them.
func (t DataType) tsl() tslType {
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	var specs any
	switch t.Kind {
	case Int, Float, Double:
		sp := map[string]string{}
		if t.Min != nil {
			sp["min"] = num(*t.Min)
		}
		if t.Max != nil {
			sp["max"] = num(*t.Max)
		}
		if t.Step != 0 {
			sp["step"] = num(t.Step)
		}
		if t.Unit != "" {
			sp["unit"] = t.Unit
		}
		specs = sp
	case Text:
		sp := map[string]string{}
		if t.MaxLength != 0 {
			sp["length"] = strconv.Itoa(t.MaxLength)
		}
		specs = sp
	case Array:
		sp := map[string]any{}
		if t.Size != 0 {
			sp["size"] = strconv.Itoa(t.Size)
		}
		if t.Item != nil {
			sp["item"] = t.Item.tsl()
		}
		specs = sp
	case Enum:
		sp := map[string]string{}
		for k, label := range t.Values {
			sp[strconv.FormatInt(k, 10)] = label
		}
		specs = sp
	case Struct:
		specs = tslParams(t.Fields)
	default: // bool, date
		specs = map[string]string{}
	}
	b, _ := json.Marshal(specs) // maps of strings and params: cannot fail
	return tslType{Type: string(t.Kind), Specs: b}
}
