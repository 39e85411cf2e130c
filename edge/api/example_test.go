package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgekit/edgekit/edge/api"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/httpcall"
)

// The local API on a server of the caller's: a function called with the
// operator's token, and refused without it.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "edgekit-api-example-")
	defer os.RemoveAll(dir)
	host, _ := function.New(nil)
	defer host.Close(ctx)
	_ = host.Register("echo", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: req.Payload}, nil
	}))
	_ = host.Deploy(ctx, function.Spec{Name: "echo", Version: "1", Runtime: function.RuntimeGo, Handler: "echo"})
	st, _ := state.Open(filepath.Join(dir, "state.db"), nil)
	defer st.Close(ctx)
	pkgs, _ := codepkg.Open(filepath.Join(dir, "packages"), nil)
	set := trigger.NewSet(host, nil, nil)
	defer set.Close(ctx)
	rec, _ := reconcile.New(&reconcile.Options{Instance: "gw", Functions: host, Triggers: set, Packages: pkgs, State: st, Dir: filepath.Join(dir, "rec")})

	token := httpcall.NewToken()
	a, err := api.New(&api.Options{Token: token, Functions: host, Deployments: rec, State: st})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close(ctx)
	srv := httptest.NewServer(a)
	defer srv.Close()

	for _, tok := range []string{token, ""} {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/functions/echo/invoke", strings.NewReader(`{"n":1}`))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, strings.TrimSpace(string(body))[:7])
	}
	// Output:
	// 200 {"n":1}
	// 401 {"error
}
