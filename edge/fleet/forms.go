package fleet

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
)

// The operator's notations, shared by the console's command line and the
// web console so that both read them alike.

// ParseWaves reads waves written as counts and percents: "1,10%,100%".
func ParseWaves(s string) ([]Wave, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []Wave
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if p, ok := strings.CutSuffix(part, "%"); ok {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: waves: %q: want a percent such as 10%%", ErrInvalid, part)
			}
			out = append(out, Wave{Percent: v})
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, fmt.Errorf("%w: waves: %q: want a count or a percent", ErrInvalid, part)
		}
		out = append(out, Wave{Count: n})
	}
	return out, nil
}

// ParseAppVersions reads a deployment's apps written as APP=VERSION,
// separated by spaces or commas.
func ParseAppVersions(fields ...string) ([]AppVersion, error) {
	var out []AppVersion
	err := pairs(fields, "apps", "APP=VERSION", func(a, v string) { out = append(out, AppVersion{App: a, Version: v}) })
	return out, err
}

// ParseLabels reads labels written as KEY=VALUE, separated by spaces or
// commas (CheckLabels judges them).
func ParseLabels(fields ...string) (map[string]string, error) {
	out := map[string]string{}
	err := pairs(fields, "labels", "KEY=VALUE", func(k, v string) { out[k] = v })
	return out, err
}

// pairs reads NAME=VALUE pairs separated by spaces or commas, neither
// side empty, into add.
func pairs(fields []string, what, want string, add func(name, value string)) error {
	for _, f := range fields {
		for _, p := range strings.FieldsFunc(f, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }) {
			n, v, ok := strings.Cut(p, "=")
			if !ok || n == "" || v == "" {
				return fmt.Errorf("%w: %s: %q: want %s", ErrInvalid, what, p, want)
			}
			add(n, v)
		}
	}
	return nil
}

// VersionForm is an app version as an operator writes it: the version,
// then an image (with the rest of a container version as JSON) or a
// function package already stored, and the optional configuration,
// triggers and probation.
type VersionForm struct {
	Version string
	// Image and Container: a container version; Container is JSON of
	// app.ContainerVersion without the image ({"spec": …, "health": …}).
	Image, Container string
	// Package is a function version's stored package; Triggers its
	// triggers as a JSON array.
	Package  *app.Artifact
	Triggers string
	// Config is the default configuration (a JSON object); Probation a
	// duration such as 30s.
	Config, Probation string
}

// Build makes the app.Version a form says; the error names the field
// that is wrong. AddVersion checks the rest.
func (vf VersionForm) Build() (app.Version, error) {
	v := app.Version{Version: strings.TrimSpace(vf.Version)}
	if c := strings.TrimSpace(vf.Config); c != "" {
		if !json.Valid([]byte(c)) {
			return v, fmt.Errorf("%w: configuration: not JSON", ErrInvalid)
		}
		v.Config = json.RawMessage(c)
	}
	if p := strings.TrimSpace(vf.Probation); p != "" {
		d, err := time.ParseDuration(p)
		if err != nil || d < 0 {
			return v, fmt.Errorf("%w: probation %q: want a duration such as 30s", ErrInvalid, p)
		}
		v.Probation = app.Duration(d)
	}
	image, container := strings.TrimSpace(vf.Image), strings.TrimSpace(vf.Container)
	switch {
	case image != "" && vf.Package != nil:
		return v, fmt.Errorf("%w: version %s: an image or a package, not both", ErrInvalid, v.Version)
	case container != "" && image == "":
		return v, fmt.Errorf("%w: version %s: the container settings need an image", ErrInvalid, v.Version)
	case image != "":
		v.Container = &app.ContainerVersion{}
		if container != "" {
			dec := json.NewDecoder(strings.NewReader(container))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v.Container); err != nil {
				return v, fmt.Errorf("%w: version %s: container settings: %v", ErrInvalid, v.Version, err)
			}
		}
		v.Container.Image = image
		if strings.TrimSpace(vf.Triggers) != "" {
			return v, fmt.Errorf("%w: version %s: triggers are for function versions", ErrInvalid, v.Version)
		}
	case vf.Package != nil:
		v.Function = &app.FunctionVersion{Package: *vf.Package}
		if t := strings.TrimSpace(vf.Triggers); t != "" {
			if err := json.Unmarshal([]byte(t), &v.Function.Triggers); err != nil {
				return v, fmt.Errorf("%w: version %s: triggers: %v", ErrInvalid, v.Version, err)
			}
		}
	default:
		return v, fmt.Errorf("%w: version %s: name an image or give a package", ErrInvalid, v.Version)
	}
	return v, nil
}
