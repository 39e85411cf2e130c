package memruntime_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/containertest"
	"github.com/edgekit/edgekit/container/memruntime"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	containertest.Run(t, containertest.Harness{
		Runtime: func(t *testing.T) container.Runtime {
			rt := memruntime.New(nil)
			t.Cleanup(func() { _ = rt.Close(context.Background()) })
			return rt
		},
		Image: func(t *testing.T, rt container.Runtime) string {
			if err := rt.ImportImage(context.Background(), "localhost/edgekit-test:1", strings.NewReader("rootfs")); err != nil {
				t.Fatal(err)
			}
			return "localhost/edgekit-test:1"
		},
	})
}

// TestPull: the simulated registry asks for its credentials.
func TestPull(t *testing.T) {
	rt := memruntime.New(map[string]memruntime.Credentials{"registry.local/app:2": {Username: "u", Password: "p"}})
	defer rt.Close(context.Background())
	ctx := context.Background()
	if err := rt.PullImage(ctx, "registry.local/app:2", nil); !errors.Is(err, container.ErrUnauthorized) {
		t.Errorf("pull without credentials: %v", err)
	}
	var progress []string
	if err := rt.PullImage(ctx, "registry.local/app:2", &container.PullOptions{Username: "u", Password: "p", Progress: func(l string) { progress = append(progress, l) }}); err != nil || len(progress) == 0 {
		t.Errorf("pull: %v, progress %v", err, progress)
	}
	if err := rt.PullImage(ctx, "registry.local/other:1", nil); !errors.Is(err, container.ErrImageNotFound) {
		t.Errorf("pull of a missing image: %v", err)
	}
}
