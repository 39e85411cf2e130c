package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// gatewayChild is the gateway TestPowerLoss kills: it runs until it is.
func gatewayChild(dir string) {
	g, err := edge.New(&edge.Options{DataDir: dir, Instance: "gw-pl", DeploymentFile: "-", Probation: 300 * time.Millisecond,
		API:          &edge.APIOptions{Address: "-", Socket: filepath.Join(dir, "api.sock")},
		OnDeployStep: holdAt(dir)})
	if err == nil {
		err = g.Run(context.Background())
	}
	fmt.Println("gateway:", err)
	os.Exit(1)
}

// holdAt is the child's OnDeployStep: when the test has asked for it (a
// file hold-<step> in dir), the child stops at that step, the journal
// saying it, and says so (a file held-<step>) until the test kills it.
// The request is taken first, so the restarted child goes on.
func holdAt(dir string) func(step string) {
	return func(step string) {
		if os.Remove(filepath.Join(dir, "hold-"+step)) != nil {
			return
		}
		_ = os.WriteFile(filepath.Join(dir, "held-"+step), nil, 0o600)
		select {}
	}
}

// slowFiles serves packages a chunk at a time, so that a kill can land
// during a download.
type slowFiles struct {
	files map[string][]byte
}

func (s *slowFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, ok := s.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	start := 0
	if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") {
		start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if start >= len(b) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(b)-1, len(b)))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	}
	for i := start; i < len(b); i += 512 {
		if _, err := w.Write(b[i:min(i+512, len(b))]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestPowerLoss runs the gateway as a child process and kills it with
// SIGKILL at random points of 24 deployments — downloads, installs,
// swaps, probations, rollbacks —, starting it again each time. Every
// restart converges to the deployment before or the one submitted: the
// state store opens, every app of that deployment runs its version and no
// other does, and no function process of an earlier run is left.
func TestPowerLoss(t *testing.T) {
	testenv.Tool(t, "python3")
	dir := filepath.Join(t.TempDir(), "data")
	files := &slowFiles{files: map[string][]byte{}}
	srv := httptest.NewServer(files)
	defer srv.Close()
	// A version in two shapes (fn 2) is packed twice into one path: tarGz
	// writes the same files into the same archive, so both deployments'
	// checksums hold.
	art := func(name, version, code string) app.Artifact {
		b := pyPackageCode(t, name, version, code)
		path := "/" + name + "-" + version + ".tgz"
		files.files[path] = b
		sum := sha256.Sum256(b)
		return app.Artifact{URL: srv.URL + path, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
	}
	noise := make([]byte, 20000)
	for i := range noise {
		noise[i] = byte(rand.IntN(256))
	}
	padding := "# " + hex.EncodeToString(noise) + "\n" // some transfer time: it does not compress away
	fnApp := func(name, version, code string) app.Assignment {
		return app.Assignment{App: app.App{Name: name, Kind: app.KindFunction},
			Version: app.Version{Version: version, Function: &app.FunctionVersion{Package: art(name, version, padding+code)}}}
	}
	shapes := [][]app.Assignment{
		{fnApp("fn", "1", ""), fnApp("fn2", "1", "")},
		{fnApp("fn", "2", ""), fnApp("fn2", "1", "")},
		{fnApp("fn", "3", "raise RuntimeError('broken at import')"), fnApp("fn2", "2", "")}, // rolled back, fn2 too
		{fnApp("fn", "2", ""), fnApp("fn3", "1", "")},                                       // fn2 removed
	}
	submitted := map[uint64][]app.Assignment{0: nil}

	child := gatewaytest.Start(t, dir, "EDGEKIT_GATEWAY_CHILD="+dir)
	steps := map[string]int{} // the journal's step at each kill ("" between deployments)
	prev := uint64(0)         // the revision running after the round before
	for round := range 24 {
		rev := uint64(round + 1)
		apps := shapes[round%len(shapes)]
		// The kill lands as a step of the deployment begins: an app
		// downloading, in probation, failed (the rollback starting),
		// starting; in the second half of each cycle a step drawn at
		// random.
		targets := []app.Phase{app.PhaseDownloading, app.PhaseProbation, app.PhaseFailed, app.PhaseStarting}
		target := targets[round%len(targets)]
		if round/len(shapes)%2 == 1 {
			target = targets[rand.IntN(len(targets))]
		}
		// The rollback of a function is over in milliseconds, and a
		// probation in 300 ms (under load, before the kill comes): the
		// child holds at such a step, so that the kill lands in it. The
		// shape that fails has no probation to hold at.
		hold := ""
		switch fails := round%len(shapes) == 2; {
		case target == app.PhaseFailed && fails:
			hold = "rolling-back"
		case target == app.PhaseProbation && !fails:
			hold = "probation"
		}
		if hold != "" {
			if err := os.WriteFile(filepath.Join(dir, "hold-"+hold), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		child.Submit(&app.Deployment{Schema: 1, ID: fmt.Sprintf("round-%d", round), Revision: rev, Apps: apps})
		submitted[rev] = apps
		if hold != "" {
			held := filepath.Join(dir, "held-"+hold)
			if !testenv.Await(time.Minute, func() bool {
				_, err := os.Stat(held)
				return err == nil
			}) {
				st, _ := child.Status()
				t.Fatalf("round %d: the child did not hold at %s: %+v", round, hold, st)
			}
			_ = os.Remove(held)
		} else {
			child.AwaitPhase(target)
		}
		child.Kill()
		if s, err := state.Open(filepath.Join(dir, "state.db"), nil); err != nil {
			t.Fatalf("round %d: the state store after the kill: %v", round, err)
		} else {
			j, _ := s.Journal()
			steps[j.Step]++
			_ = s.Close(context.Background())
		}
		child.Restart()

		// It converges: no deployment in progress, and what runs is the
		// deployment the status calls running, all of it.
		st := child.Settled(fmt.Sprintf("round %d converging", round))
		running := gatewaytest.RunningRevision(st)
		if running != rev && running != prev {
			t.Errorf("round %d: running revision %d, want %d or the one before it (%d): %+v", round, running, rev, prev, st)
		}
		prev = running
		want := map[string]string{}
		for _, a := range submitted[running] {
			want[a.App.Name] = a.Version.Version
		}
		_, body := child.Call("GET", "/v1/functions", nil)
		var fns []struct{ Name, Version, Phase string }
		_ = json.Unmarshal(body, &fns)
		got := map[string]string{}
		for _, f := range fns {
			if f.Phase == "running" {
				got[f.Name] = f.Version
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("round %d (running revision %d, %s): functions %v, want %v", round, running, st.Outcome, got, want)
		}
		if orphans := strayInstances(t, dir, child.Pid()); len(orphans) > 0 {
			t.Errorf("round %d: function processes of an earlier run still there: %v", round, orphans)
		}
	}
	t.Logf("the journal's step at each kill: %v", steps)
	for _, step := range []string{"fetching", "probation", "rolling-back"} {
		if steps[step] == 0 {
			t.Errorf("no kill landed while %s (%v)", step, steps)
		}
	}
}

// strayInstances lists the processes running the gateway's bootstraps from
// dir that are not descendants of the gateway pid.
func strayInstances(t *testing.T, dir string, pid int) []int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if !bytes.Contains(cmdline, []byte(dir)) || p == pid {
			continue
		}
		if !descends(p, pid) && !testenv.ProcessGone(p) {
			out = append(out, p)
		}
	}
	return out
}

func descends(p, ancestor int) bool {
	for range 64 {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return false
		}
		s := bufio.NewScanner(f)
		parent := 0
		for s.Scan() {
			if v, ok := strings.CutPrefix(s.Text(), "PPid:"); ok {
				parent, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		f.Close()
		if parent == ancestor {
			return true
		}
		if parent <= 1 {
			return false
		}
		p = parent
	}
	return false
}
