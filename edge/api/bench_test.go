package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/api"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/httpcall"
)

// BenchmarkHTTPInvoke: an HTTP invoke through the local API of a native Go
// function (an out-of-process edgekit function on the native protocol) and
// of an in-process Go handler (the API's own cost), each beside a bare
// net/http handler echoing the body, both on loopback with keep-alive,
// their calls interleaved so that both see the same machine (target: API
// p50 ≤ 1.2× bare).
func BenchmarkHTTPInvoke(b *testing.B) {
	b.Run("native-go", func(b *testing.B) { benchHTTPInvoke(b, true) })
	b.Run("in-process", func(b *testing.B) { benchHTTPInvoke(b, false) })
}

func benchHTTPInvoke(b *testing.B, native bool) {
	ctx := context.Background()
	dir := b.TempDir()
	bin := filepath.Join(dir, "native")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/edgekit/edgekit/function/internal/testfunctions/native").CombinedOutput(); err != nil {
		b.Fatalf("building the native test function: %v\n%s", err, out)
	}
	host, err := function.New(&function.Options{DataDir: filepath.Join(dir, "functions")})
	if err != nil {
		b.Fatal(err)
	}
	defer host.Close(ctx)
	spec := function.Spec{Name: "echo", Version: "1", Runtime: function.RuntimeExecutable, API: function.APINative, Handler: "native",
		CodeDir: dir, Mode: function.Continuous, Env: map[string]string{"TEST_BEHAVIOUR": "echo"}}
	if !native {
		_ = host.Register("echo", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			return invoke.Response{Payload: req.Payload, ContentType: "application/json"}, nil
		}))
		spec = function.Spec{Name: "echo", Version: "1", Runtime: function.RuntimeGo, Handler: "echo", Mode: function.Continuous}
	}
	if err := host.Deploy(ctx, spec); err != nil {
		b.Fatal(err)
	}
	st, err := state.Open(filepath.Join(dir, "state.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close(ctx)
	pkgs, _ := codepkg.Open(filepath.Join(dir, "packages"), nil)
	set := trigger.NewSet(host, nil, nil)
	defer set.Close(ctx)
	rec, err := reconcile.New(&reconcile.Options{Instance: "gw", Functions: host, Triggers: set, Packages: pkgs, State: st, Dir: filepath.Join(dir, "rec")})
	if err != nil {
		b.Fatal(err)
	}
	token := httpcall.NewToken()
	a, err := api.New(&api.Options{Token: token, Functions: host, Deployments: rec})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close(ctx)
	apiSrv := httptest.NewUnstartedServer(a)
	apiSrv.Config = httpcall.NewHTTPServer(a, 0)
	apiSrv.Start()
	defer apiSrv.Close()
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer bare.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	payload := []byte(`{"device":"boiler","temperature":21.5}`)
	post := func(url string, auth bool) error {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return os.ErrInvalid
		}
		return nil
	}
	var bareT, apiT []time.Duration
	for range 100 { // warm both
		_ = post(bare.URL, false)
		_ = post(apiSrv.URL+"/v1/functions/echo/invoke", true)
	}
	b.ResetTimer()
	for i := 0; i < max(b.N, 2000); i++ {
		start := time.Now()
		if err := post(bare.URL, false); err != nil {
			b.Fatal(err)
		}
		bareT = append(bareT, time.Since(start))
		start = time.Now()
		if err := post(apiSrv.URL+"/v1/functions/echo/invoke", true); err != nil {
			b.Fatal(err)
		}
		apiT = append(apiT, time.Since(start))
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(benchutil.Percentile(bareT, 50)), "bare-p50-µs")
	b.ReportMetric(us(benchutil.Percentile(apiT, 50)), "api-p50-µs")
	b.ReportMetric(us(benchutil.Percentile(apiT, 99)), "api-p99-µs")
	b.ReportMetric(float64(benchutil.Percentile(apiT, 50))/float64(benchutil.Percentile(bareT, 50)), "ratio-p50")
}
