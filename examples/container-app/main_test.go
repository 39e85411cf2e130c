package main

import (
	"context"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/internal/podmantest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestExample runs the example against a private podman service.
func TestExample(t *testing.T) {
	svc := podmantest.Start(t)
	out := &testenv.Buffer{}
	if err := run(context.Background(), svc.URL, out); err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"hello 1: running", "app 1 starting", "hello 2: running", "rolled back: version 3 was not healthy", "done"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
