package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
)

// A gateway with a builtin function of the firmware's, its deployment
// taken from the Go API; no broker, no upstream, no HTTP API.
func ExampleGateway() {
	dir, _ := os.MkdirTemp("", "edgekit-example-")
	defer os.RemoveAll(dir)
	g, err := edge.New(&edge.Options{
		DataDir: filepath.Join(dir, "data"), Instance: "gw-example",
		API: &edge.APIOptions{Address: "-"}, DeploymentFile: "-",
		Builtins: []function.Spec{{Name: "hello", Version: "1", Runtime: function.RuntimeGo, Handler: "hello"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	<-g.Ready()
	_ = g.Functions().Register("hello", function.HandlerFunc(func(context.Context, invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: []byte(`"hello from the gateway"`)}, nil
	}))
	// The gateway publishes its deployment status on its bus.
	committed := make(chan struct{})
	var once sync.Once
	sub, _ := g.Bus().Subscribe(ctx, edge.StatusTopic("gw-example"), func(_ context.Context, m *bus.Message) {
		var st app.Status
		if json.Unmarshal(m.Payload, &st) == nil && st.Outcome == app.OutcomeSucceeded {
			once.Do(func() { close(committed) })
		}
	}, nil)
	_ = g.Reconciler().Submit(&app.Deployment{Schema: app.SchemaVersion, ID: "first", Revision: 1})
	<-committed
	_ = sub.Unsubscribe(ctx)
	resp, _ := g.Functions().Invoke(ctx, "hello", invoke.Request{})
	fmt.Println(string(resp.Payload))
	_ = g.Close(ctx)
	fmt.Println("stopped:", <-done)
	// Output:
	// "hello from the gateway"
	// stopped: <nil>
}
