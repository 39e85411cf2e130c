package bus_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/bus"
)

func TestValidateTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"a", true}, {"/", true}, {"a//b", true}, {"$SYS/x", true}, {"température/ü", true}, {" ", true},
		{"", false}, {"a/+", false}, {"#", false}, {"a/b#", false}, {"a\x00", false}, {"\xff", false},
		{strings.Repeat("x", bus.MaxTopicLength), true}, {strings.Repeat("x", bus.MaxTopicLength+1), false},
	} {
		err := bus.ValidateTopic(tc.topic)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateTopic(%.20q) = %v, want ok=%v", tc.topic, err, tc.ok)
		}
		if err != nil && !errors.Is(err, bus.ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%.20q) error %v does not wrap ErrInvalidTopic", tc.topic, err)
		}
	}
}

func TestValidateFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		ok     bool
	}{
		{"#", true}, {"+", true}, {"a/#", true}, {"+/+", true}, {"/+", true}, {"a//#", true}, {"+/#", true},
		{"$share/g/a/#", true}, {"$share/g/#", true}, {"$shared/x", true}, {"$share", true},
		{"", false}, {"a#", false}, {"#/a", false}, {"a/#/b", false}, {"a+", false}, {"+a/b", false},
		{"$share/", false}, {"$share/g", false}, {"$share//a", false}, {"$share/g#/a", false}, {"$share/g/", false},
		{"$share/g/a/#/b", false},
	} {
		err := bus.ValidateFilter(tc.filter)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateFilter(%q) = %v, want ok=%v", tc.filter, err, tc.ok)
		}
		if err != nil && !errors.Is(err, bus.ErrInvalidFilter) {
			t.Errorf("ValidateFilter(%q) error %v does not wrap ErrInvalidFilter", tc.filter, err)
		}
	}
	err := bus.ValidateFilter("a/b#/c")
	if err == nil || !strings.Contains(err.Error(), "level 2") {
		t.Errorf("error %v does not name the level", err)
	}
}

// The examples of MQTT v5 section 4.7.
var matchCases = []struct {
	filter, topic string
	want          bool
}{
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/#", "sport", true},
	{"#", "sport", true},
	{"#", "/", true},
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+", "/finance", false},
	{"#", "$SYS/monitor/Clients", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"a/b", "a/b", true},
	{"a/b", "a/b/c", false},
	{"a/b/c", "a/b", false},
	{"a//b", "a//b", true},
	{"a/+/b", "a//b", true},
	{"+/+/#", "a", false},
	{"a/+/#", "a/b", true},
	{"A", "a", false},
}

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		if got := bus.Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestFilterIndexAgreesWithMatch(t *testing.T) {
	x := bus.NewFilterIndex[int]()
	for i, tc := range matchCases {
		x.Add(tc.filter, i)
	}
	for i, tc := range matchCases {
		var got []int
		x.Match(tc.topic, func(v int) { got = append(got, v) })
		if slices.Contains(got, i) != tc.want {
			t.Errorf("index: filter %q topic %q matched=%v, want %v", tc.filter, tc.topic, !tc.want, tc.want)
		}
	}
	for i, tc := range matchCases {
		if !x.Remove(tc.filter, i) {
			t.Errorf("Remove(%q, %d) found nothing", tc.filter, i)
		}
	}
	if x.Len() != 0 {
		t.Errorf("Len() = %d after removing all", x.Len())
	}
	if x.Remove("a/b", 1) {
		t.Error("Remove of an absent entry reported true")
	}
}

func TestSplitShared(t *testing.T) {
	g, f, ok := bus.SplitShared("$share/grp/a/+")
	if !ok || g != "grp" || f != "a/+" {
		t.Errorf("got %q %q %v", g, f, ok)
	}
	if _, f, ok := bus.SplitShared("a/b"); ok || f != "a/b" {
		t.Errorf("plain filter reported as shared")
	}
}

// FuzzValidateAndMatch checks that validation never panics, that anything
// valid as a topic is valid as a filter, and that the index and Match agree.
func FuzzValidateAndMatch(f *testing.F) {
	for _, tc := range matchCases {
		f.Add(tc.filter, tc.topic)
	}
	f.Add("$share/g/a/#", "a/b")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		topicErr := bus.ValidateTopic(topic)
		filterErr := bus.ValidateFilter(filter)
		if topicErr == nil && bus.ValidateFilter(topic) != nil {
			t.Fatalf("topic %q valid but not as a filter", topic)
		}
		if topicErr != nil || filterErr != nil {
			return
		}
		_, inner, _ := bus.SplitShared(filter)
		want := bus.Match(inner, topic)
		x := bus.NewFilterIndex[int]()
		x.Add(inner, 1)
		got := false
		x.Match(topic, func(int) { got = true })
		if got != want {
			t.Fatalf("filter %q topic %q: index %v, Match %v", inner, topic, got, want)
		}
		if !strings.ContainsAny(inner, "+#") && want != (inner == topic) {
			t.Fatalf("literal filter %q topic %q: Match %v", inner, topic, want)
		}
		if !x.Remove(inner, 1) || x.Len() != 0 {
			t.Fatalf("remove %q failed", inner)
		}
	})
}

// BenchmarkFilterIndexMatch matches one topic against 10,000 subscriptions'
// filters (a gateway's worth: 2,500 devices with four filters each).
func BenchmarkFilterIndexMatch(b *testing.B) {
	x := bus.NewFilterIndex[int]()
	n := 0
	for d := range 2500 {
		x.Add(fmt.Sprintf("devices/dev%d/properties/+", d), n)
		x.Add(fmt.Sprintf("devices/dev%d/events/#", d), n+1)
		x.Add(fmt.Sprintf("devices/+/properties/p%d", d), n+2)
		x.Add(fmt.Sprintf("apps/app%d/#", d), n+3)
		n += 4
	}
	matched := 0
	b.ReportAllocs()
	for b.Loop() {
		x.Match("devices/dev1234/properties/p1234", func(int) { matched++ })
	}
	if matched == 0 {
		b.Fatal("nothing matched")
	}
}

// BenchmarkMatchLinear is the baseline: Match against each of the 10,000
// filters in turn.
func BenchmarkMatchLinear(b *testing.B) {
	var filters []string
	for d := range 2500 {
		filters = append(filters, fmt.Sprintf("devices/dev%d/properties/+", d), fmt.Sprintf("devices/dev%d/events/#", d),
			fmt.Sprintf("devices/+/properties/p%d", d), fmt.Sprintf("apps/app%d/#", d))
	}
	for b.Loop() {
		for _, f := range filters {
			bus.Match(f, "devices/dev1234/properties/p1234")
		}
	}
}
