package codepkg_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
)

// cancelling reads from r and cancels its context after the first read,
// as a caller giving up midway through a download.
type cancelling struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancelling) Read(b []byte) (int, error) {
	n, err := c.r.Read(b[:min(len(b), 512)])
	c.cancel()
	return n, err
}

// failing gives n bytes of r, then an error: a connection lost midway.
type failing struct {
	r io.Reader
	n int
}

func (f *failing) Read(b []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	n, err := f.r.Read(b[:min(len(b), f.n)])
	f.n -= n
	return n, err
}

// TestInstallStreams: Install reads its archive from a stream; a context
// ended midway or a stream that breaks installs nothing and leaves no
// file behind; a version installed already is returned without reading
// the stream.
func TestInstallStreams(t *testing.T) {
	dir := t.TempDir()
	s, err := codepkg.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("padding that does not compress away ", 1)
	for range 12 {
		body += body
	}
	archive := zipArchive(t, manifest("stream", "1"), entry{name: "main.py", body: body})
	p := pkg(archive, "stream", "1")

	ctx, cancel := context.WithCancel(context.Background())
	if _, err := s.Install(ctx, &cancelling{r: bytes.NewReader(archive), cancel: cancel}, p); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled midway: %v, want context.Canceled", err)
	}
	if _, err := s.Install(context.Background(), &failing{r: bytes.NewReader(archive), n: len(archive) / 2}, p); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("a stream that breaks: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}

	want, err := s.Install(context.Background(), bytes.NewReader(archive), p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Install(context.Background(), &failing{}, p)
	if err != nil || !specsEqual(got, want) {
		t.Errorf("installed again from a stream it need not read: %+v %v", got, err)
	}
}

func specsEqual(a, b function.Spec) bool {
	return a.Name == b.Name && a.Version == b.Version && a.CodeDir == b.CodeDir && a.Handler == b.Handler &&
		a.Runtime == b.Runtime && a.API == b.API && a.Timeout == b.Timeout && a.MaxInstances == b.MaxInstances
}

// TestReadBack: after a reboot (a new Store on the same directory) List
// and Get give back every installed version's Spec as Install gave it,
// without the archives; a removal cut short counts as not installed, and
// the version installs again.
func TestReadBack(t *testing.T) {
	dir := t.TempDir()
	s, _ := codepkg.Open(dir, nil)
	var installed []function.Spec
	for _, v := range []string{"1", "2"} {
		fn, err := install(s, tarGz(t, manifest("app", v), entry{name: "main.py", body: "v" + v}), "app", v)
		if err != nil {
			t.Fatal(err)
		}
		installed = append(installed, fn)
	}
	other, err := install(s, tarGz(t, manifest("other", "7"), entry{name: "main.py", body: "x"}), "other", "7")
	if err != nil {
		t.Fatal(err)
	}
	installed = append(installed, other)

	s, err = codepkg.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("List: %+v %v", list, err)
	}
	for i, in := range list {
		if !specsEqual(in.Spec, installed[i]) || len(in.SHA256) != 64 {
			t.Errorf("List[%d] = %+v, want %+v", i, in, installed[i])
		}
	}
	if fn, err := s.Get("app", "2"); err != nil || !specsEqual(fn, installed[1]) {
		t.Errorf("Get app 2: %+v %v", fn, err)
	}
	if d, err := s.Digest("app", "2"); err != nil || d != list[1].SHA256 {
		t.Errorf("Digest of app 2: %q %v, want %q", d, err, list[1].SHA256)
	}
	if _, err := s.Digest("app", "9"); !errors.Is(err, codepkg.ErrNotFound) {
		t.Errorf("Digest of a version not installed: %v", err)
	}
	for _, nv := range [][2]string{{"app", "3"}, {"nope", "1"}, {"..", "1"}, {"app", ""}} {
		if _, err := s.Get(nv[0], nv[1]); !errors.Is(err, codepkg.ErrNotFound) {
			t.Errorf("Get %v: %v, want ErrNotFound", nv, err)
		}
	}

	// A removal cut short: the digest gone, the code still there.
	if err := os.Remove(filepath.Join(dir, "app", "1", ".sha256")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("app", "1"); !errors.Is(err, codepkg.ErrNotFound) {
		t.Errorf("Get of a half-removed version: %v, want ErrNotFound", err)
	}
	if list, _ := s.List(); len(list) != 2 {
		t.Errorf("List with a half-removed version: %+v", list)
	}
	if _, err := install(s, tarGz(t, manifest("app", "1"), entry{name: "main.py", body: "v1"}), "app", "1"); err != nil {
		t.Errorf("installing a half-removed version again: %v", err)
	}

	// A manifest changed on disk to name another version is not read back.
	if err := os.WriteFile(filepath.Join(dir, "other", "7", "function.json"), []byte(manifest("other", "8").body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("other", "7"); !errors.Is(err, codepkg.ErrManifest) {
		t.Errorf("Get of a version whose manifest names another: %v, want ErrManifest", err)
	}
	if list, err := s.List(); len(list) != 2 || !errors.Is(err, codepkg.ErrManifest) {
		t.Errorf("List with a bad manifest: %d versions, %v", len(list), err)
	}
}

// TestHold: a held version is not removed (ErrInUse) until every hold is
// released; releasing twice is harmless; only installed versions are held.
func TestHold(t *testing.T) {
	s, _ := codepkg.Open(t.TempDir(), nil)
	if _, err := install(s, tarGz(t, manifest("app", "1"), entry{name: "main.py", body: "x"}), "app", "1"); err != nil {
		t.Fatal(err)
	}
	r1, err := s.Hold("app", "1")
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := s.Hold("app", "1")
	if err := s.Remove("app", "1"); !errors.Is(err, codepkg.ErrInUse) {
		t.Errorf("Remove while held: %v, want ErrInUse", err)
	}
	r1()
	r1()
	if err := s.Remove("app", "1"); !errors.Is(err, codepkg.ErrInUse) {
		t.Errorf("Remove while held once more: %v, want ErrInUse", err)
	}
	r2()
	if err := s.Remove("app", "1"); err != nil {
		t.Errorf("Remove after the holds: %v", err)
	}
	if _, err := s.Get("app", "1"); !errors.Is(err, codepkg.ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	if _, err := s.Hold("app", "1"); !errors.Is(err, codepkg.ErrNotFound) {
		t.Errorf("Hold of a version not installed: %v, want ErrNotFound", err)
	}
}

// TestBuildsOnEveryOS: the store and Sign build for macOS and Windows,
// where vendors sign their packages.
func TestBuildsOnEveryOS(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, target := range [][2]string{{"darwin", "arm64"}, {"windows", "amd64"}} {
		cmd := exec.Command(goTool, "build", "-o", os.DevNull, ".")
		cmd.Env = append(os.Environ(), "GOOS="+target[0], "GOARCH="+target[1], "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s GOARCH=%s go build: %v\n%s", target[0], target[1], err, out)
		}
	}
}

// TestVerify: a file of an installed version changed, removed or added on
// disk is found and named; an archive may not carry the store's listing.
func TestVerify(t *testing.T) {
	dir := t.TempDir()
	s, _ := codepkg.Open(dir, nil)
	if _, err := install(s, tarGz(t, manifest("app", "1"), entry{name: "main.py", body: "def handler(e, c): return 1\n"}, entry{name: "lib/util.py", body: "x = 1\n"}), "app", "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("app", "1"); err != nil {
		t.Fatalf("a fresh install: %v", err)
	}
	code := filepath.Join(dir, "app", "1", "main.py")
	b, _ := os.ReadFile(code)
	b[4] ^= 0x20 // a byte flipped on disk
	if err := os.WriteFile(code, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("app", "1"); !errors.Is(err, codepkg.ErrDamaged) || !strings.Contains(err.Error(), `changed: "main.py"`) {
		t.Errorf("a flipped byte: %v", err)
	}
	b[4] ^= 0x20
	_ = os.WriteFile(code, b, 0o644)
	_ = os.Remove(filepath.Join(dir, "app", "1", "lib", "util.py"))
	if err := s.Verify("app", "1"); !errors.Is(err, codepkg.ErrDamaged) || !strings.Contains(err.Error(), `"lib/util.py"`) {
		t.Errorf("a removed file: %v", err)
	}
	if err := s.Verify("app", "9"); !errors.Is(err, codepkg.ErrNotFound) {
		t.Errorf("a version not installed: %v", err)
	}
	if _, err := install(s, tarGz(t, manifest("app", "2"), entry{name: ".tree", body: "d \"x\"\n"}), "app", "2"); !errors.Is(err, codepkg.ErrUnsafe) {
		t.Errorf("an archive with the store's listing: %v, want ErrUnsafe", err)
	}
}
