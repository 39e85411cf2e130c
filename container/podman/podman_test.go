package podman_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/containertest"
	"github.com/edgekit/edgekit/container/podman"
	"github.com/edgekit/edgekit/container/podman/internal/podmantest"
)

// TestConformance runs containertest against a real podman service.
func TestConformance(t *testing.T) {
	svc := podmantest.Start(t)
	rootfs := podmantest.TestProgramTar(t)
	containertest.Run(t, containertest.Harness{
		Runtime: func(t *testing.T) container.Runtime {
			rt, err := podman.Connect(context.Background(), svc.URL)
			if err != nil {
				t.Fatal(err)
			}
			return rt
		},
		Image: func(t *testing.T, rt container.Runtime) string {
			const ref = "localhost/edgekit-testprog:1"
			if err := rt.ImportImage(context.Background(), ref, bytes.NewReader(rootfs)); err != nil {
				t.Fatal(err)
			}
			return ref
		},
		Command: []string{"/testprog"},
	})
}
