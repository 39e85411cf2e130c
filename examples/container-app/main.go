// Command container-app runs a container application through the edgekit
// container manager on podman: it builds the application (./app) into an
// image locally (no registry needed), runs version 1, shows its status and
// logs, upgrades to version 2, then tries a broken version 3, which is
// rolled back, and removes the app.
//
// It is a module of its own (it imports container/podman) and needs a
// podman service:
//
//	podman system service --time=0 unix:///run/podman/podman.sock &
//	cd examples/container-app
//	go run -tags remote,containers_image_openpgp,exclude_graphdriver_btrfs . -podman unix:///run/podman/podman.sock
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/podman"
)

func main() {
	url := flag.String("podman", "unix:///run/podman/podman.sock", "podman service URL")
	flag.Parse()
	if err := run(context.Background(), *url, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "container-app:", err)
		os.Exit(1)
	}
}

const image = "localhost/edgekit-example-app:1"

func run(ctx context.Context, url string, out io.Writer) error {
	rt, err := podman.Connect(ctx, url)
	if err != nil {
		return err
	}
	rootfs, err := buildApp()
	if err != nil {
		return err
	}
	if err := rt.ImportImage(ctx, image, bytes.NewReader(rootfs)); err != nil {
		return err
	}
	fmt.Fprintln(out, "imported", image)

	m := container.NewManager(rt, &container.ManagerOptions{OnChange: func(s container.AppStatus) {
		fmt.Fprintf(out, "  %s %s: %s\n", s.Name, s.Version, s.State)
	}})
	defer m.Close(ctx)
	app := func(version string, env map[string]string) container.App {
		e := map[string]string{"APP_VERSION": version}
		for k, v := range env {
			e[k] = v
		}
		return container.App{Name: "hello", Version: version, Probation: 3 * time.Second,
			Spec: container.Spec{Image: image, Command: []string{"/app"}, Env: e, NetworkMode: "none", StopGrace: time.Second,
				Resources: container.Resources{MemoryBytes: 64 << 20}}}
	}
	wait := func(what string, ok func(container.AppStatus) bool) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if st := m.Status(); len(st) == 1 && ok(st[0]) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("timed out waiting for %s: %+v", what, m.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	fmt.Fprintln(out, "apply version 1")
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		return err
	}
	if err := wait("version 1", func(s container.AppStatus) bool { return s.State == container.AppRunning }); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	fmt.Fprintln(out, "logs:")
	if err := m.Logs(ctx, "hello", container.LogOptions{Tail: 5}, prefixed{out}); err != nil {
		return err
	}

	fmt.Fprintln(out, "upgrade to version 2")
	if err := m.Apply(ctx, []container.App{app("2", nil)}); err != nil {
		return err
	}
	if err := wait("version 2", func(s container.AppStatus) bool { return s.Version == "2" && s.State == container.AppRunning }); err != nil {
		return err
	}

	fmt.Fprintln(out, "upgrade to version 3 (broken)")
	if err := m.Apply(ctx, []container.App{app("3", map[string]string{"APP_BROKEN": "1"})}); err != nil {
		return err
	}
	if err := wait("the rollback", func(s container.AppStatus) bool { return s.RolledBack != "" && s.State == container.AppRunning }); err != nil {
		return err
	}
	s := m.Status()[0]
	fmt.Fprintf(out, "status: version %s %s, restarts %d; rolled back: %s\n", s.Version, s.State, s.Restarts, s.RolledBack)

	fmt.Fprintln(out, "remove")
	if err := m.Apply(ctx, nil); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := rt.List(ctx, map[string]string{container.LabelApp: "hello"})
		if err == nil && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the app's containers were not removed: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(out, "done")
	return nil
}

// prefixed indents log lines.
type prefixed struct{ w io.Writer }

func (p prefixed) Write(b []byte) (int, error) {
	for line := range bytes.SplitSeq(bytes.TrimRight(b, "\n"), []byte("\n")) {
		fmt.Fprintf(p.w, "  | %s\n", line)
	}
	return len(b), nil
}

// buildApp compiles ./app as a static binary and returns a root
// filesystem tar holding it as /app.
func buildApp() ([]byte, error) {
	dir, err := os.MkdirTemp("", "edgekit-example-app-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "app")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/edgekit/edgekit/examples/container-app/app")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the app: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(data)), ModTime: time.Now()}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	return buf.Bytes(), tw.Close()
}
