// Package podmantest runs a private podman service for tests: its own
// containers.conf (runtime runc, cgroupfs, lowered ulimits, a short
// exit_command_delay) and storage.conf (its own storage root, so tests
// never touch the host's images and containers), `podman system service`
// on a socket in a temporary directory, and the test program's image. It
// installs nothing; under CI=true a missing podman fails the test.
package podmantest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekit/edgekit/internal/testenv"
)

// Service is a running private podman service.
type Service struct {
	URL string // unix:///.../podman.sock
	dir string
	env []string
	cmd *exec.Cmd
	log *os.File
}

// Start starts a service for t and stops it, with everything it ran, when
// t ends.
func Start(t testing.TB) *Service {
	t.Helper()
	testenv.Tool(t, "podman")
	testenv.Tool(t, "runc")
	testenv.Root(t, "a rootful podman service")
	dir, err := os.MkdirTemp("", "edgekit-podman-")
	if err != nil {
		t.Fatal(err)
	}
	conf := `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
exit_command_delay = 5
`
	storage := fmt.Sprintf("[storage]\ndriver = \"overlay\"\nrunroot = %q\ngraphroot = %q\n", filepath.Join(dir, "run"), filepath.Join(dir, "storage"))
	for name, body := range map[string]string{"containers.conf": conf, "storage.conf": storage} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := &Service{URL: "unix://" + filepath.Join(dir, "podman.sock"), dir: dir,
		env: append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"), "CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"))}
	s.log, _ = os.Create(filepath.Join(dir, "service.log"))
	t.Cleanup(func() {
		_ = s.podman("rm", "-af", "-t", "0")
		s.Stop()
		s.log.Close()
		_ = exec.Command("umount", "-l", filepath.Join(dir, "storage", "overlay")).Run()
		_ = os.RemoveAll(dir)
	})
	s.Restart(t)
	return s
}

// Stop stops the service; the containers it started keep running (conmon
// watches them).
func (s *Service) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	s.cmd = nil
}

// Restart starts the service (again) on the same socket and waits until it
// answers.
func (s *Service) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	dir := s.dir
	cmd := exec.Command("podman", "--tmpdir", filepath.Join(dir, "tmp"), "system", "service", "--time=0", s.URL)
	cmd.Env = s.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting podman system service: %v", err)
	}
	s.cmd = cmd
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "podman.sock"))
	}}, Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://podman/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "service.log"))
			t.Fatalf("podman system service did not answer: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// podman runs the podman command line against the service's storage.
func (s *Service) podman(args ...string) error {
	cmd := exec.Command("podman", append([]string{"--tmpdir", filepath.Join(s.dir, "tmp")}, args...)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("podman %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// TestProgramTar builds the test program (container/internal/testprog) as
// a static binary and returns a root filesystem tar holding it as
// /testprog.
func TestProgramTar(t testing.TB) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testprog")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/edgekit/edgekit/container/internal/testprog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test program: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "testprog", Mode: 0o755, Size: int64(len(data)), ModTime: time.Now()})
	_, _ = tw.Write(data)
	_ = tw.Close()
	return buf.Bytes()
}
