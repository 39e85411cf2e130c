package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/edgekit/edgekit/internal/podmantest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestExample runs the example against a private podman service.
func TestExample(t *testing.T) {
	svc := podmantest.Start(t)
	out := &syncBuffer{}
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
