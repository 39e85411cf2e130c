package function_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
)

// An in-process Go function: register the handler, deploy a version of it,
// invoke it by name.
func Example() {
	ctx := context.Background()
	host, err := function.New(nil)
	if err != nil {
		panic(err)
	}
	defer host.Close(ctx)

	_ = host.Register("threshold", function.HandlerFunc(func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		inv, _ := function.FromContext(ctx)
		var cfg struct{ Max float64 }
		var in struct{ Temperature float64 }
		_ = json.Unmarshal(inv.Config, &cfg)
		if err := json.Unmarshal(req.Payload, &in); err != nil {
			return invoke.Response{}, err
		}
		return invoke.Response{Payload: fmt.Appendf(nil, `{"alarm":%t}`, in.Temperature > cfg.Max)}, nil
	}))
	err = host.Deploy(ctx, function.Spec{
		Name: "boiler-alarm", Version: "1.0.0", Runtime: function.RuntimeGo, Handler: "threshold",
		Config: json.RawMessage(`{"Max": 80}`),
	})
	if err != nil {
		panic(err)
	}
	resp, err := host.Invoke(ctx, "boiler-alarm", invoke.Request{Payload: []byte(`{"Temperature": 85.5}`)})
	fmt.Println(string(resp.Payload), err)
	// Output: {"alarm":true} <nil>
}
