package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/procstat"
	"github.com/edgekit/edgekit/internal/testenv"
)

// helloServer is the baseline: the smallest Go program of the same kind
// (an HTTP server on loopback), built the same way.
const helloServer = `package main

import "net/http"

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.ListenAndServe("127.0.0.1:0", nil)
}
`

// BenchmarkIdle: the example gateway's binary size and its idle RSS once
// its deployment runs (the process itself; its functions and Mosquitto are
// processes of their own), built without the podman backend, beside a
// minimal Go HTTP server's, built and measured in the same run (targets:
// ≤ 25 MB, ≤ 30 MB).
func BenchmarkIdle(b *testing.B) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	dir := b.TempDir()
	gw, hello := filepath.Join(dir, "gateway"), filepath.Join(dir, "hello")
	// Without the podman backend, as the target says (its bindings are
	// a module of their own, for vendors who run containers).
	if out, err := exec.Command(goTool, "build", "-tags", "nopodman", "-o", gw, ".").CombinedOutput(); err != nil {
		b.Fatalf("building the gateway: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(dir, "hellosrc"), 0o755); err != nil {
		b.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "hellosrc", "main.go"), []byte(helloServer), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "hellosrc", "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644)
	cmd := exec.Command(goTool, "build", "-o", hello, ".")
	cmd.Dir = filepath.Join(dir, "hellosrc")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the baseline: %v\n%s", err, out)
	}
	size := func(path string) float64 {
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		return float64(st.Size()) / (1 << 20)
	}

	examples, _ := filepath.Abs("..")
	template, _ := os.ReadFile("deployment.json")
	deployment := filepath.Join(dir, "deployment.json")
	_ = os.WriteFile(deployment, bytes.ReplaceAll(template, []byte(`"dir:../`), []byte(`"dir:`+examples+"/")), 0o600)
	data := filepath.Join(brokertest.DataDir(b), "data") // Mosquitto, which drops root, must reach it
	g := exec.Command(gw, "-data", data, "-listen", "127.0.0.1:0", "-api", "127.0.0.1:0", "-deployment", deployment, "-name", "bench")
	g.Stderr, _ = os.Create(filepath.Join(dir, "gateway.log"))
	out, _ := g.StdoutPipe()
	if err := g.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = g.Process.Signal(os.Interrupt); _ = g.Wait() }()
	lines := bufio.NewScanner(out)
	var api string
	for lines.Scan() {
		if m := regexp.MustCompile(`local API on (http://\S+)`).FindStringSubmatch(lines.Text()); m != nil {
			api = m[1]
			break
		}
	}
	go func() {
		for lines.Scan() {
		}
	}()
	token, _ := os.ReadFile(filepath.Join(data, "api-token"))
	if api == "" {
		log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
		b.Fatalf("the gateway did not start:\n%s", log)
	}
	testenv.EventuallyWithin(b, "the deployment committed", time.Minute, func() bool {
		req, _ := http.NewRequest("GET", api+"/v1/deployment", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct{ Outcome string }
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st.Outcome == "succeeded"
	})
	h := exec.Command(hello)
	if err := h.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = h.Process.Kill(); _ = h.Wait() }()
	// Idle: sampled every 100 ms for two seconds, the median.
	var gwRSS, helloRSS []time.Duration // in KiB, held as durations for the median
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 20 {
		<-tick.C
		gwRSS = append(gwRSS, time.Duration(procstat.KB(g.Process.Pid, "VmRSS")))
		helloRSS = append(helloRSS, time.Duration(procstat.KB(h.Process.Pid, "VmRSS")))
	}
	b.ReportMetric(size(gw), "gateway-binary-MiB")
	b.ReportMetric(size(hello), "baseline-binary-MiB")
	b.ReportMetric(float64(benchutil.Median(gwRSS))/1024, "gateway-rss-MiB")
	b.ReportMetric(float64(benchutil.Median(helloRSS))/1024, "baseline-rss-MiB")
}
