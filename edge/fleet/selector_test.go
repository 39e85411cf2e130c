package fleet_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/fleet"
)

func TestSelector(t *testing.T) {
	labels := map[string]string{"env": "prod", "site": "plant-1", "gpu": "yes"}
	for sel, want := range map[string]bool{
		"":                       true,
		"env=prod":               true,
		"env=prod, site=plant-1": true,
		"env=test":               false,
		"env!=test":              true,
		"env!=prod":              false,
		"gpu":                    true,
		"!gpu":                   false,
		"!legacy":                true,
		"legacy":                 false,
		"missing!=x":             true,
	} {
		s, err := fleet.ParseSelector(sel)
		if err != nil {
			t.Errorf("%q: %v", sel, err)
			continue
		}
		if got := s.Matches(labels); got != want {
			t.Errorf("%q matches %v: %v, want %v", sel, labels, got, want)
		}
	}
	for _, bad := range []string{"=x", "env=", "env==prod", "a b", "env=prod,,site=x", "!", "k=" + string(make([]byte, 64))} {
		if _, err := fleet.ParseSelector(bad); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzParseSelector: any text parses or is refused with ErrInvalid, and
// a selector that parses reads the same again from its String.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "env=prod", "a!=b,c,!d", "=", "!!x", "a=b=c", " x , y "} {
		f.Add(s)
	}
	labels := map[string]string{"env": "prod", "a": "b", "c": "1"}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := fleet.ParseSelector(text)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("%q: %v, not ErrInvalid", text, err)
			}
			return
		}
		again, err := fleet.ParseSelector(s.String())
		if err != nil || again.Matches(labels) != s.Matches(labels) {
			t.Fatalf("%q reads back as %q differently (%v)", text, s.String(), err)
		}
	})
}

// FuzzParseReport: any topic and payload off the network is refused with
// an error or read as one report about the instance its topic names.
func FuzzParseReport(f *testing.F) {
	for _, c := range [][2]string{
		{"edgekit/instances/gw-1/status", `{"schema":1,"instance":"gw-1","deployment":"d","revision":3,"outcome":"succeeded","apps":[]}`},
		{"edgekit/instances/gw-1/presence", `{"instance":"gw-1","online":true,"time":"2026-12-02T00:00:00Z"}`},
		{"edgekit/instances/gw-1/status", `{"instance":"gw-2"}`},
		{"edgekit/instances/../status", `{}`},
		{"edgekit/instances/gw-1/desired", `{}`},
		{"edgekit/instances/gw-1/status", ``},
	} {
		f.Add(c[0], []byte(c[1]))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		id, status, presence, err := fleet.ParseReport(topic, payload)
		if err != nil {
			return
		}
		if status == presence {
			t.Fatalf("%q: status %v and presence %v", topic, status, presence)
		}
		if !fleet.ValidInstance(id) || !strings.HasPrefix(topic, "edgekit/instances/"+id+"/") {
			t.Fatalf("%q read as a report about %q", topic, id)
		}
	})
}

// FuzzParseWaves: the operator's waves never panic the parser, and what
// it takes is a count or a percent each.
func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"", "1,10%,100%", "5", "%", "1,,2", "1e309%", "-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ws, err := fleet.ParseWaves(s)
		if err != nil {
			return
		}
		for _, w := range ws {
			if w.Count != 0 && w.Percent != 0 {
				t.Fatalf("%q gave a wave with a count and a percent: %+v", s, w)
			}
		}
	})
}

// FuzzParseAppVersions: every pair it takes has an app and a version.
func FuzzParseAppVersions(f *testing.F) {
	for _, s := range []string{"alarm=1", "a=1 b=2,c=3", "=", "a=", "=1", "a==1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		avs, err := fleet.ParseAppVersions(s)
		if err != nil {
			return
		}
		for _, av := range avs {
			if av.App == "" || av.Version == "" {
				t.Fatalf("%q gave %+v", s, av)
			}
		}
	})
}
