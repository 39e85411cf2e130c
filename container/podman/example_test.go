package podman_test

import (
	"context"
	"log"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/podman"
)

// Connect to the gateway's podman service and hand the runtime to a
// Manager, which keeps an application running from its image.
func ExampleConnect() {
	ctx := context.Background()
	rt, err := podman.Connect(ctx, "unix:///run/podman/podman.sock")
	if err != nil {
		log.Fatal(err) // wraps container.ErrUnavailable when nothing answers
	}
	m := container.NewManager(rt, nil)
	defer m.Close(ctx)
	err = m.Apply(ctx, []container.App{{
		Name:    "collector",
		Version: "1.4.2",
		Spec:    container.Spec{Image: "registry.example.com/acme/collector:1.4.2"},
		Pull:    &container.PullOptions{Username: "gateway-17", Password: "…"},
		Health:  &container.Probe{HTTP: "http://127.0.0.1:8080/health"},
	}})
	if err != nil {
		log.Fatal(err)
	}
}
