package api_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/api"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/function/native"
	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/httpcall"
)

// BenchmarkHTTPInvoke: HTTP invokes through the local API, beside the
// floors they stand on, all on loopback with keep-alive. In each
// sub-benchmark the rows' calls are interleaved so that every row sees the
// same machine:
//
//   - bare: a net/http handler echoing the body (the baseline);
//   - pipe-floor: that handler passing the body through a long-lived Go
//     child over pipes and back (cmd pipeecho: no protocol at all) — the
//     least any out-of-process function can cost;
//   - native-without-host: that handler driving the native Go test
//     function over its protocol itself (the protocol's and the child's
//     own cost);
//   - api-native: the local API invoking that function through the host;
//   - api-in-process: the local API invoking an in-process Go handler (the
//     API's and host's own cost, no process hop).
//
// Each row reports its p50 (µs) and its ratio to bare; native also reports
// api-native's ratio to pipe-floor, the part of its cost the host adds.
// Both run in each machine mode (idle/, busy/: see benchutil.Modes), and
// fail when a ratio is more than 20% worse than recordedHTTPRatios. The
// alone/ sub-benchmarks run one row each.
func BenchmarkHTTPInvoke(b *testing.B) {
	benchutil.Modes(b, func(b *testing.B) {
		b.Run("native", func(b *testing.B) {
			benchHTTPInvoke(b, "bare", "pipe-floor", "native-without-host", "api-native")
		})
		b.Run("in-process", func(b *testing.B) { benchHTTPInvoke(b, "bare", "api-in-process") })
	})
	// Each row by itself, for counting what one call costs (perf stat).
	for _, name := range []string{"bare", "pipe-floor", "native-without-host", "api-native", "api-in-process"} {
		b.Run("alone/"+name, func(b *testing.B) { benchHTTPInvoke(b, name) })
	}
}

func benchHTTPInvoke(b *testing.B, names ...string) {
	ctx := context.Background()
	dir := b.TempDir()
	for _, cmd := range []string{"native", "pipeecho"} {
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", filepath.Join(dir, cmd),
			"github.com/edgekit/edgekit/function/internal/testfunctions/"+cmd).CombinedOutput()
		if err != nil {
			b.Fatalf("building %s: %v\n%s", cmd, err, out)
		}
	}
	host, err := function.New(&function.Options{DataDir: filepath.Join(dir, "functions")})
	if err != nil {
		b.Fatal(err)
	}
	defer host.Close(ctx)
	_ = host.Register("echo", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: req.Payload, ContentType: "application/json"}, nil
	}))
	for _, spec := range []function.Spec{
		{Name: "native", Runtime: function.RuntimeExecutable, API: function.APINative, Handler: "native", CodeDir: dir, Env: map[string]string{"TEST_BEHAVIOUR": "bench"}},
		{Name: "in-process", Runtime: function.RuntimeGo, Handler: "echo"},
	} {
		spec.Version, spec.Mode = "1", function.Continuous
		if err := host.Deploy(ctx, spec); err != nil {
			b.Fatal(err)
		}
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

	echo := func(through func([]byte) ([]byte, error)) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if through != nil {
				var err error
				if body, err = through(body); err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}))
		b.Cleanup(s.Close)
		return s.URL
	}
	pipeFloor := startChild(b, filepath.Join(dir, "pipeecho"), nil)
	back := make([]byte, 64<<10)
	nativeChild := startChild(b, filepath.Join(dir, "native"), []string{"TEST_BEHAVIOUR=bench"})
	var wbuf, rbuf []byte
	if f, err := native.ReadFrame(nativeChild.r, &rbuf); err != nil || f.Type != native.FrameReady {
		b.Fatalf("native test function: ready: %v %v", f, err)
	}
	meta := []byte(`{"requestId":"0-1","function":"native","version":"1"}`)
	seq := uint64(0)

	type row struct {
		name, url string
		auth      bool
		samples   []time.Duration
	}
	rows := []row{
		{name: "bare", url: echo(nil)},
		{name: "pipe-floor", url: echo(func(body []byte) ([]byte, error) {
			if _, err := pipeFloor.w.Write(body); err != nil {
				return nil, err
			}
			_, err := io.ReadFull(pipeFloor.r, back[:len(body)])
			return back[:len(body)], err
		})},
		{name: "native-without-host", url: echo(func(body []byte) ([]byte, error) {
			seq++
			wbuf = native.AppendFrame(wbuf[:0], &native.Frame{Type: native.FrameInvoke, Seq: seq, Deadline: time.Now().Add(time.Minute).UnixMilli(), Meta: meta, Payload: body})
			if _, err := nativeChild.w.Write(wbuf); err != nil {
				return nil, err
			}
			f, err := native.ReadFrame(nativeChild.r, &rbuf)
			if err != nil {
				return nil, err
			}
			return f.Payload, nil
		})},
		{name: "api-native", url: apiSrv.URL + "/v1/functions/native/invoke", auth: true},
		{name: "api-in-process", url: apiSrv.URL + "/v1/functions/in-process/invoke", auth: true},
	}

	rows = slices.DeleteFunc(rows, func(r row) bool { return !slices.Contains(names, r.name) })
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
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, payload) {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, got)
		}
		return nil
	}
	for i := range 100 + max(b.N, 2000) {
		if i == 100 {
			b.ResetTimer()
		}
		for k := range rows {
			start := time.Now()
			if err := post(rows[k].url, rows[k].auth); err != nil {
				b.Fatal(err)
			}
			if i >= 100 {
				rows[k].samples = append(rows[k].samples, time.Since(start))
			}
		}
	}
	b.StopTimer()
	p50 := make(map[string]time.Duration)
	ratio := func(unit string, got float64) {
		_, mode, _ := strings.Cut(b.Name(), "/") // "idle/native"
		if r := recordedHTTPRatios[mode+"/"+unit]; r > 0 {
			benchutil.CheckRatio(b, unit, got, r)
		} else {
			b.ReportMetric(got, unit)
		}
	}
	for _, r := range rows {
		p50[r.name] = benchutil.Median(r.samples)
		b.ReportMetric(float64(p50[r.name])/float64(time.Microsecond), r.name+"-p50-µs")
		if r.name != "bare" && p50["bare"] > 0 {
			ratio(r.name+"/bare", float64(p50[r.name])/float64(p50["bare"]))
		}
	}
	if p50["pipe-floor"] > 0 && p50["api-native"] > 0 {
		ratio("api-native/pipe-floor", float64(p50["api-native"])/float64(p50["pipe-floor"]))
	}
}

// recordedHTTPRatios are the figures docs/PERFORMANCE.md gives for
// BenchmarkHTTPInvoke's idle/ and busy/ runs, the worst of three (as in
// function's recordedRatios); a ratio more than benchutil.Regression
// times worse fails the benchmark.
var recordedHTTPRatios = map[string]float64{
	"idle/native/api-native/bare":         2.98,
	"idle/native/api-native/pipe-floor":   1.28,
	"idle/in-process/api-in-process/bare": 1.17,
	"busy/native/api-native/bare":         2.67,
	"busy/native/api-native/pipe-floor":   1.46,
	"busy/in-process/api-in-process/bare": 1.19,
}

// child is a long-lived process the benchmark talks to over pipes: its
// fds 3 and 4 (as the native protocol has them) and its stdin and stdout
// are the same pipes.
type child struct {
	w *os.File
	r *bufio.Reader
}

func startChild(b *testing.B, path string, env []string) child {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), env...)
	childIn, w, _ := os.Pipe()
	r, childOut, _ := os.Pipe()
	_, tel, _ := os.Pipe()
	cmd.Stdin, cmd.Stdout = childIn, childOut
	cmd.ExtraFiles = []*os.File{childIn, childOut, tel}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	childIn.Close()
	childOut.Close()
	tel.Close()
	b.Cleanup(func() { w.Close(); _ = cmd.Wait(); r.Close() })
	return child{w: w, r: bufio.NewReaderSize(r, 64<<10)}
}
