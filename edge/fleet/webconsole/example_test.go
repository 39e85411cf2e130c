package webconsole_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/store/boltstore"
	"github.com/edgekit/edgekit/edge/fleet/webconsole"
)

// The web console is mounted beside the fleet's API; a page asked for
// without a session goes to the sign-in page.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "fleet-")
	defer os.RemoveAll(dir)
	st, _ := boltstore.Open(filepath.Join(dir, "fleet.db"), nil)
	defer st.Close(ctx)
	b := membus.New(nil)
	defer b.Close(ctx)
	f, _ := fleet.New(&fleet.Options{Store: st, Bus: b})

	console, err := webconsole.New(ctx, f, &webconsole.Options{Token: "the-fleet-operators-token"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer console.Close(ctx)
	mux := http.NewServeMux()
	mux.Handle(webconsole.Prefix+"/", console)

	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/ui/gateways", nil))
	fmt.Println(w.Code, w.Header().Get("Location"))
	// Output: 303 /ui/signin
}
