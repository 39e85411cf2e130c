package reconcile_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/internal/testenv"
)

// BenchmarkDeploy100: a deployment of 100 Python function apps, from its
// submission to all of them serving, beside 100 direct Host.Deploy calls
// of the same installed specs on a fresh host, in the same run (target:
// ≤ 1.5× the direct calls). The packages are file URLs: the fetch is the
// install, not a network.
func BenchmarkDeploy100(b *testing.B) {
	testenv.Tool(b, "python3")
	const n = 100
	src := b.TempDir()
	var apps []app.Assignment
	for i := range n {
		name := fmt.Sprintf("fn%03d", i)
		archive := pyPackage(b, name, "1", "")
		path := filepath.Join(src, name+".tgz")
		if err := os.WriteFile(path, archive, 0o644); err != nil {
			b.Fatal(err)
		}
		sum := sha256.Sum256(archive)
		apps = append(apps, fnApp(name, "1", app.Artifact{URL: "file://" + path, Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}))
	}
	var viaReconcile, direct []time.Duration
	for round := range max(b.N, 3) {
		r := newRig(b, nil)
		start := time.Now()
		if err := r.rec.Submit(dep(uint64(round+1), apps...)); err != nil {
			b.Fatal(err)
		}
		testenv.EventuallyWithin(b, "100 functions serving", 5*time.Minute, func() bool { return allServing(r.host, n) })
		viaReconcile = append(viaReconcile, time.Since(start))

		// The same specs, installed, deployed one by one on a new host.
		pkgs, _ := codepkg.Open(filepath.Join(r.dir, "packages"), nil)
		specs := make([]function.Spec, 0, n)
		for _, a := range apps {
			s, err := pkgs.Get(a.App.Name, "1")
			if err != nil {
				b.Fatal(err)
			}
			specs = append(specs, s)
		}
		r.shutdown()
		host, err := function.New(&function.Options{DataDir: filepath.Join(r.dir, "direct")})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for _, s := range specs {
			if err := host.Deploy(context.Background(), s); err != nil {
				b.Fatal(err)
			}
		}
		direct = append(direct, time.Since(start))
		_ = host.Close(context.Background())
	}
	med := benchutil.Median
	b.ReportMetric(float64(med(viaReconcile).Milliseconds()), "deployment-ms")
	b.ReportMetric(float64(med(direct).Milliseconds()), "direct-ms")
	b.ReportMetric(float64(med(viaReconcile))/float64(med(direct)), "ratio")
}

func allServing(h *function.Host, n int) bool {
	list := h.List()
	if len(list) < n {
		return false
	}
	for _, s := range list {
		if s.Phase != function.PhaseRunning {
			return false
		}
	}
	return true
}
