package e2e_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleetapi"
)

// fleetConsole is the fleet's program (examples/console), built for the
// test: `console serve` runs the fleet as a child process, and every
// operator step is one of its commands, as an operator would type it.
type fleetConsole struct {
	t              *testing.T
	bin, url, data string
}

// startConsole builds the console and serves a fleet on the broker and
// the store (bolt:PATH or postgres:DSN); it is stopped (SIGTERM) when the
// test ends, and its log is shown if the test failed.
func startConsole(t *testing.T, brokerURL, store string) *fleetConsole {
	t.Helper()
	dir := t.TempDir()
	c := &fleetConsole{t: t, bin: filepath.Join(dir, "console"), data: filepath.Join(dir, "fleet")}
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", c.bin, "./examples/console")
	build.Dir = filepath.Join("..", "..") // the edgekit module
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the console: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(c.bin, "serve", "-broker", brokerURL, "-store", store, "-data", c.data, "-listen", "127.0.0.1:0")
	serve.Stderr = logFile
	out, _ := serve.StdoutPipe()
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- serve.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("console serve ended with %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = serve.Process.Kill()
			<-done
			t.Errorf("console serve did not stop on SIGTERM within 30 s")
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("console serve's log:\n%s", b)
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "serving on ") {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("console serve: %q %v\n%s", line, err, b)
	}
	c.url = strings.TrimSpace(strings.TrimPrefix(line, "serving on "))
	return c
}

// run runs one console command against the fleet and returns what it
// printed; an error carries what it said on stderr.
func (c *fleetConsole) run(args ...string) (string, error) { return c.runIn("", args...) }

// runIn is run with stdin.
func (c *fleetConsole) runIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.bin, append(args, "-url", c.url, "-token-file", filepath.Join(c.data, "api-token"))...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("console %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// must runs a command that must succeed; with v, it decodes the JSON the
// command printed into v.
func (c *fleetConsole) must(v any, args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			c.t.Fatalf("console %s printed %q: %v", strings.Join(args, " "), out, err)
		}
	}
	return out
}

// keygen makes a signing key in dir with console keygen: its file and
// its public key.
func (c *fleetConsole) keygen(dir string) (string, ed25519.PublicKey) {
	c.t.Helper()
	key := filepath.Join(dir, "signing-key.hex")
	pub, err := hex.DecodeString(strings.TrimSpace(c.must(nil, "keygen", key)))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		c.t.Fatalf("console keygen: %x %v", pub, err)
	}
	return key, pub
}

// functionDir writes a function directory the console packs: the Go
// function's binary as its bootstrap, and its function.json with env.
func functionDir(t *testing.T, dir string, bootstrap []byte, env map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest, _ := json.Marshal(map[string]any{"runtime": "executable", "handler": "bootstrap", "env": env})
	if err := os.WriteFile(filepath.Join(dir, "function.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), bootstrap, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rollout is what console rollout status prints for the deployment (the
// zero view when the command fails).
func (c *fleetConsole) rollout(id string) fleetapi.DeploymentView {
	var view fleetapi.DeploymentView
	if out, err := c.run("rollout", "status", id); err == nil {
		_ = json.Unmarshal([]byte(out), &view)
	}
	return view
}

// instances is what console instance list prints (nil when it fails).
func (c *fleetConsole) instances() []fleet.InstanceView {
	var ins []fleet.InstanceView
	if out, err := c.run("instance", "list"); err == nil {
		_ = json.Unmarshal([]byte(out), &ins)
	}
	return ins
}

// running is the version of each app a gateway runs.
func running(g *edge.Gateway) map[string]string {
	out := map[string]string{}
	for _, a := range g.Reconciler().Status().Apps {
		if a.Phase == app.PhaseRunning {
			out[a.App] = a.Version
		}
	}
	return out
}
