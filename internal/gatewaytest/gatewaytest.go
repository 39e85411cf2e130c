// Package gatewaytest runs a gateway as a child process for the tests that
// kill it: the test binary run again (its TestMain runs the gateway when
// the environment says so), reached through its local API on the unix
// socket <dir>/api.sock with the token in <dir>/api-token; and Run starts
// one in the test's own process. The tests of package edge and of edge/e2e
// use it.
package gatewaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/internal/testenv"
)

// Child is a gateway running as a child process.
type Child struct {
	t      testing.TB
	dir    string
	env    []string
	cmd    *exec.Cmd
	client *http.Client
	token  string
}

// Start runs the test binary with env added to its environment and waits
// until the gateway it runs on data directory dir is ready. The child is
// killed when the test ends.
func Start(t testing.TB, dir string, env ...string) *Child {
	t.Helper()
	sock := filepath.Join(dir, "api.sock")
	c := &Child{t: t, dir: dir, env: env, client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
	t.Cleanup(c.Kill)
	c.start()
	return c
}

func (c *Child) start() {
	c.t.Helper()
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), c.env...)
	c.cmd.Stdout, c.cmd.Stderr = io.Discard, io.Discard
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	testenv.EventuallyWithin(c.t, "the gateway answering", time.Minute, func() bool {
		if b, err := os.ReadFile(filepath.Join(c.dir, "api-token")); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
		resp, err := c.client.Get("http://gw/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && c.token != ""
	})
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Kill kills the child with SIGKILL and reaps it. It is safe to call when
// the child is gone.
func (c *Child) Kill() {
	if c.cmd != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// Restart starts the child again after a Kill.
func (c *Child) Restart() {
	c.t.Helper()
	c.Kill()
	c.start()
}

// Call sends a request to the local API with the operator's token.
func (c *Child) Call(method, path string, body []byte) (int, []byte) {
	req, _ := http.NewRequest(method, "http://gw"+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Submit posts a deployment, failing the test unless it is taken.
func (c *Child) Submit(d *app.Deployment) {
	c.t.Helper()
	b, _ := json.Marshal(d)
	if code, body := c.Call(http.MethodPost, "/v1/deployment", b); code != http.StatusAccepted {
		c.t.Fatalf("submitting revision %d: %d %s", d.Revision, code, body)
	}
}

// Status reads the deployment status.
func (c *Child) Status() (app.Status, bool) {
	_, body := c.Call(http.MethodGet, "/v1/deployment", nil)
	var st app.Status
	return st, json.Unmarshal(body, &st) == nil
}

// AwaitPhase waits (up to 5 s) until an app of the deployment in progress
// is in phase p, and reports whether one was: the moment a test kills
// the child at.
func (c *Child) AwaitPhase(p app.Phase) bool {
	return testenv.Await(5*time.Second, func() bool {
		st, ok := c.Status()
		return ok && st.Outcome == app.OutcomeInProgress && phaseIn(st, p)
	})
}

func phaseIn(st app.Status, p app.Phase) bool {
	for _, a := range st.Apps {
		if a.Phase == p {
			return true
		}
	}
	return false
}

// Settled waits until no deployment is in progress and no app is on its
// way (pending, downloading, installing, starting, in probation), and
// returns the status then.
func (c *Child) Settled(what string) app.Status {
	c.t.Helper()
	var st app.Status
	testenv.EventuallyWithin(c.t, what, time.Minute, func() bool {
		var ok bool
		if st, ok = c.Status(); !ok || st.Outcome == app.OutcomeInProgress || st.Outcome == "" {
			return false
		}
		for _, p := range []app.Phase{app.PhasePending, app.PhaseDownloading, app.PhaseInstalling, app.PhaseStarting, app.PhaseProbation} {
			if phaseIn(st, p) {
				return false
			}
		}
		return true
	})
	return st
}

// RunningRevision is the revision the status says the apps run (0: none).
func RunningRevision(st app.Status) uint64 {
	if st.Running == nil {
		return 0
	}
	return st.Running.Revision
}

// Run starts a gateway with opts in this process and waits until it is
// ready; stop closes it and fails the test when Run returned an error.
// stop is safe to call twice, and the test's end calls it.
func Run(t testing.TB, opts *edge.Options) (g *edge.Gateway, stop func()) {
	t.Helper()
	g, err := edge.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := g.Close(context.Background()); err != nil {
				t.Errorf("closing the gateway: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("the gateway's Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("the gateway did not start: %v", err)
	}
	return g, stop
}
