package container_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/memruntime"
)

// A Manager keeps an application running on a runtime: here the in-memory
// one; on a gateway, container/podman's.
func ExampleManager() {
	ctx := context.Background()
	rt := memruntime.New(nil)
	defer rt.Close(context.Background())
	if err := rt.ImportImage(ctx, "localhost/hello:1", strings.NewReader("rootfs")); err != nil {
		panic(err)
	}

	running := make(chan container.AppStatus, 1)
	m := container.NewManager(rt, &container.ManagerOptions{OnChange: func(s container.AppStatus) {
		if s.State == container.AppRunning {
			select {
			case running <- s:
			default:
			}
		}
	}})
	defer m.Close(ctx)

	err := m.Apply(ctx, []container.App{{
		Name:    "hello",
		Version: "1",
		Spec:    container.Spec{Image: "localhost/hello:1", Env: map[string]string{"GREETING": "hi"}, StopGrace: time.Second},
		Restart: container.Always,
	}})
	if err != nil {
		panic(err)
	}
	s := <-running
	fmt.Println(s.Name, s.Version, s.State)
	// Output: hello 1 running
}
