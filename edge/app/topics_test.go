package app_test

import (
	"testing"

	"github.com/edgekit/edgekit/edge/app"
)

func TestInstanceOf(t *testing.T) {
	for _, c := range []struct {
		topic, instance, rest string
		ok                    bool
	}{
		{app.StatusTopic("gw-1"), "gw-1", "status", true},
		{app.PresenceTopic("a.b"), "a.b", "presence", true},
		{"edgekit/instances/gw-1/", "", "", false},
		{"edgekit/instances//status", "", "", false},
		{"edgekit/instances/gw-1", "", "", false},
		{"other/instances/gw-1/status", "", "", false},
		{"edgekit/instances/", "", "", false},
	} {
		instance, rest, ok := app.InstanceOf(c.topic)
		if instance != c.instance || rest != c.rest || ok != c.ok {
			t.Errorf("InstanceOf(%q) = %q, %q, %v; want %q, %q, %v", c.topic, instance, rest, ok, c.instance, c.rest, c.ok)
		}
	}
}
