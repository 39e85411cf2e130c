package codepkg_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

type entry struct {
	name, body, link string
	mode             int64
	typ              byte
}

func manifest(name, version string) entry {
	return entry{name: "function.json", body: `{"name":"` + name + `","version":"` + version + `","runtime":"python","handler":"main.handler"}`}
}

func tarGz(t testing.TB, entries ...entry) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), Typeflag: e.typ, Linkname: e.link}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func zipArchive(t testing.TB, entries ...entry) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := os.FileMode(0o644)
		if e.mode != 0 {
			mode = os.FileMode(e.mode)
		}
		if e.link != "" {
			mode = os.ModeSymlink | 0o777
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if e.link != "" {
			_, _ = w.Write([]byte(e.link))
		} else {
			_, _ = w.Write([]byte(e.body))
		}
	}
	zw.Close()
	return buf.Bytes()
}

// pkg is what a deployment says of archive, as name and version.
func pkg(archive []byte, name, version string) codepkg.Package {
	sum := sha256.Sum256(archive)
	return codepkg.Package{Name: name, Version: version, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(archive))}
}

// install installs archive as name and version.
func install(s *codepkg.Store, archive []byte, name, version string) (function.Spec, error) {
	return s.Install(context.Background(), bytes.NewReader(archive), pkg(archive, name, version))
}

func TestInstallTarGzAndZip(t *testing.T) {
	dir := t.TempDir()
	s, err := codepkg.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for version, archive := range map[string][]byte{
		"1.0.0": tarGz(t, manifest("app", "1.0.0"), entry{name: "main.py", body: "def handler(e, c): return e\n"}, entry{name: "bin/tool", body: "#!/bin/sh\n", mode: 0o4755}, entry{name: "lib/x.py", link: "../main.py", typ: tar.TypeSymlink}),
		"2.0.0": zipArchive(t, manifest("app", "2.0.0"), entry{name: "main.py", body: "def handler(e, c): return e\n"}, entry{name: "bin/tool", body: "#!/bin/sh\n", mode: 0o755}, entry{name: "lib/x.py", link: "../main.py"}),
	} {
		spec, err := install(s, archive, "app", version)
		if err != nil {
			t.Fatal(err)
		}
		if spec.CodeDir != filepath.Join(dir, "app", spec.Version) || spec.Mode != function.OnDemand {
			t.Errorf("spec %+v", spec)
		}
		st, err := os.Stat(filepath.Join(spec.CodeDir, "bin/tool"))
		if err != nil || st.Mode().Perm() != 0o755 || st.Mode()&os.ModeSetuid != 0 {
			t.Errorf("bin/tool mode %v (%v), want 0755 without setuid", st.Mode(), err)
		}
		if target, err := os.Readlink(filepath.Join(spec.CodeDir, "lib/x.py")); err != nil || target != "../main.py" {
			t.Errorf("link: %q %v", target, err)
		}
		// The same content again is a no-op.
		if _, err := install(s, archive, "app", version); err != nil {
			t.Errorf("reinstall: %v", err)
		}
	}
	other := tarGz(t, manifest("app", "1.0.0"), entry{name: "main.py", body: "changed"})
	if _, err := install(s, other, "app", "1.0.0"); !errors.Is(err, codepkg.ErrExists) {
		t.Errorf("same version, other content: %v", err)
	}
	if err := s.Remove("app", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "app", "1.0.0")); !os.IsNotExist(err) {
		t.Errorf("removed version still there: %v", err)
	}
}

func TestVerification(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	s, _ := codepkg.Open(t.TempDir(), &codepkg.Options{PublicKey: pub})
	archive := tarGz(t, manifest("signed", "1"), entry{name: "main.py", body: "x"})
	try := func(p codepkg.Package) error {
		_, err := s.Install(context.Background(), bytes.NewReader(archive), p)
		return err
	}

	// A signed digest the archive does not match.
	p := pkg(archive, "signed", "1")
	fake := sha256.Sum256([]byte("other"))
	p.SHA256, p.Signature = hex.EncodeToString(fake[:]), ed25519.Sign(priv, fake[:])
	if err := try(p); !errors.Is(err, codepkg.ErrChecksum) {
		t.Errorf("wrong checksum: %v", err)
	}
	p = pkg(archive, "signed", "1")
	if err := try(p); !errors.Is(err, codepkg.ErrSignature) || !strings.Contains(err.Error(), "no signature") {
		t.Errorf("missing signature: %v", err)
	}
	p.Signature = codepkg.Sign(otherKey, archive)
	if err := try(p); !errors.Is(err, codepkg.ErrSignature) {
		t.Errorf("signature by another key: %v", err)
	}
	p.Signature = codepkg.Sign(priv, archive)
	for _, tc := range []struct {
		change func(*codepkg.Package)
		want   error
		naming string
	}{
		{func(p *codepkg.Package) { p.Size++ }, codepkg.ErrChecksum, "the deployment says"},
		{func(p *codepkg.Package) { p.Version = "2" }, codepkg.ErrManifest, "the manifest says signed version 1"},
		{func(p *codepkg.Package) { p.Name = "other" }, codepkg.ErrManifest, "the manifest says signed version 1"},
		{func(p *codepkg.Package) { p.Name = "" }, codepkg.ErrManifest, "required"},
		{func(p *codepkg.Package) { p.Version = "../1" }, codepkg.ErrManifest, "required"},
		{func(p *codepkg.Package) { p.SHA256 = "abc" }, codepkg.ErrChecksum, "64 hex digits"},
		{func(p *codepkg.Package) { p.Size = 1 << 40 }, codepkg.ErrTooLarge, "more than"},
	} {
		bad := p
		tc.change(&bad)
		if err := try(bad); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.naming) {
			t.Errorf("%+v: %v, want %v naming %q", bad, err, tc.want, tc.naming)
		}
	}
	if l, _ := s.List(); len(l) != 0 {
		t.Errorf("installed after refusals: %+v", l)
	}
	if err := try(p); err != nil {
		t.Errorf("good signature: %v", err)
	}
}

func TestHostileArchives(t *testing.T) {
	for name, tc := range map[string]struct {
		archive []byte
		want    error
		naming  string
	}{
		"traversal":          {tarGz(t, manifest("h", "1"), entry{name: "../escape", body: "x"}), codepkg.ErrUnsafe, "../escape"},
		"deep traversal":     {tarGz(t, manifest("h", "1"), entry{name: "a/../../escape", body: "x"}), codepkg.ErrUnsafe, "a/../../escape"},
		"absolute":           {tarGz(t, manifest("h", "1"), entry{name: "/etc/evil", body: "x"}), codepkg.ErrUnsafe, "/etc/evil"},
		"link escape":        {tarGz(t, manifest("h", "1"), entry{name: "l", link: "../../etc", typ: tar.TypeSymlink}), codepkg.ErrUnsafe, "points outside"},
		"absolute link":      {tarGz(t, manifest("h", "1"), entry{name: "l", link: "/etc/passwd", typ: tar.TypeSymlink}), codepkg.ErrUnsafe, "absolute"},
		"write through link": {tarGz(t, manifest("h", "1"), entry{name: "l", link: "sub", typ: tar.TypeSymlink}, entry{name: "l/file", body: "x"}), codepkg.ErrUnsafe, "inside symbolic link"},
		"hard link":          {tarGz(t, manifest("h", "1"), entry{name: "h", link: "function.json", typ: tar.TypeLink}), codepkg.ErrUnsafe, `"h"`},
		"device":             {tarGz(t, manifest("h", "1"), entry{name: "dev", typ: tar.TypeChar}), codepkg.ErrUnsafe, "dev"},
		"duplicate":          {tarGz(t, manifest("h", "1"), entry{name: "a", body: "1"}, entry{name: "a", body: "2"}), codepkg.ErrUnsafe, `"a"`},
		"zip traversal":      {zipArchive(t, manifest("h", "1"), entry{name: "../../escape", body: "x"}), codepkg.ErrUnsafe, "escape"},
		"zip link escape":    {zipArchive(t, manifest("h", "1"), entry{name: "l", link: "../../../tmp"}), codepkg.ErrUnsafe, "points outside"},
		"bomb":               {tarGz(t, manifest("h", "1"), entry{name: "zeros", body: strings.Repeat("\x00", 2<<20)}), codepkg.ErrTooLarge, "1048576 bytes"},
		"too many files":     {tarGz(t, append([]entry{manifest("h", "1")}, manyFiles(20)...)...), codepkg.ErrTooLarge, "entries"},
		"not an archive":     {[]byte("hello"), codepkg.ErrFormat, "neither"},
		"truncated":          {tarGz(t, manifest("h", "1"))[:30], codepkg.ErrFormat, ""},
		"no manifest":        {tarGz(t, entry{name: "main.py", body: "x"}), codepkg.ErrManifest, "function.json not found"},
		"bad manifest":       {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python"}`}), codepkg.ErrManifest, "handler"},
		"unknown field":      {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python","handler":"m.h","timout":"3s"}`}), codepkg.ErrManifest, "timout"},
		"escaping version":   {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"../../x","runtime":"python","handler":"m.h"}`}), codepkg.ErrManifest, "version"},
		// A link that stays inside on paper but leaves through another
		// link: "l/.." is the parent of wherever l leads.
		"link through a link":       {tarGz(t, manifest("h", "1"), entry{name: "l", link: ".", typ: tar.TypeSymlink}, entry{name: "m", link: "l/../escape", typ: tar.TypeSymlink}), codepkg.ErrUnsafe, `link "m"`},
		"link through a later link": {tarGz(t, manifest("h", "1"), entry{name: "m", link: "l/../escape", typ: tar.TypeSymlink}, entry{name: "l", link: ".", typ: tar.TypeSymlink}), codepkg.ErrUnsafe, `link "m"`},
		"zip link through a link":   {zipArchive(t, manifest("h", "1"), entry{name: "l", link: "."}, entry{name: "m", link: "l/../../etc"}), codepkg.ErrUnsafe, `link "m"`},
		"manifest through a link":   {tarGz(t, entry{name: "real.json", body: manifest("h", "1").body}, entry{name: "function.json", link: "real.json", typ: tar.TypeSymlink}), codepkg.ErrManifest, "not a regular file"},
		"digest through a link":     {tarGz(t, manifest("h", "1"), entry{name: ".sha256", link: "main.py", typ: tar.TypeSymlink}), codepkg.ErrUnsafe, `".sha256"`},
		"digest in the archive":     {tarGz(t, manifest("h", "1"), entry{name: ".sha256", body: "0"}), codepkg.ErrUnsafe, `".sha256"`},
		"implied directories":       {tarGz(t, manifest("h", "1"), entry{name: "a/b/c/d/e/f/g/h/i/j/k/file", body: "x"}), codepkg.ErrTooLarge, "directories they imply"},
		"handler outside":           {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"executable","handler":"../../../bin/sh"}`}), codepkg.ErrManifest, "handler"},
		"absolute handler":          {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"executable","handler":"/bin/sh"}`}), codepkg.ErrManifest, "absolute"},
		"python handler outside":    {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python","handler":"../x.handler"}`}), codepkg.ErrManifest, "handler"},
		"root user":                 {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python","handler":"m.h","user":{"uid":0,"gid":0}}`}), codepkg.ErrManifest, "root"},
		"preloaded library":         {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python","handler":"m.h","env":{"LD_PRELOAD":"/tmp/x.so"}}`}), codepkg.ErrManifest, "env.LD_PRELOAD"},
		"node options":              {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"nodejs","handler":"m.h","env":{"NODE_OPTIONS":"--require /tmp/x.js"}}`}), codepkg.ErrManifest, "env.NODE_OPTIONS"},
		"code dir":                  {tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python","handler":"m.h","codeDir":"/etc"}`}), codepkg.ErrManifest, "codeDir"},
	} {
		parent := t.TempDir()
		dir := filepath.Join(parent, "store")
		s, _ := codepkg.Open(dir, &codepkg.Options{MaxBytes: 1 << 20, MaxFiles: 10})
		_, err := install(s, tc.archive, "h", "1")
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.naming) {
			t.Errorf("%s: %v, want %v naming %q", name, err, tc.want, tc.naming)
		}
		// Nothing outside the store, nothing installed inside it.
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Errorf("%s: files written beside the store: %v", name, ents)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: store not empty after a refused install: %v", name, ents)
		}
	}
}

func manyFiles(n int) []entry {
	var out []entry
	for i := range n {
		out = append(out, entry{name: "f" + string(rune('a'+i)), body: "x"})
	}
	return out
}

// TestInstalledPackageRuns: the store's output deploys and runs on the
// host.
func TestInstalledPackageRuns(t *testing.T) {
	testenv.Tool(t, "python3")
	s, _ := codepkg.Open(t.TempDir(), nil)
	spec, err := install(s, tarGz(t, manifest("packaged", "1"), entry{name: "main.py", body: "def handler(event, context):\n    return {'got': event}\n"}), "packaged", "1")
	if err != nil {
		t.Fatal(err)
	}
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	if err := h.Deploy(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	resp, err := h.Invoke(context.Background(), "packaged", invoke.Request{Payload: []byte(`7`)})
	if err != nil || string(resp.Payload) != `{"got": 7}` {
		t.Errorf("packaged function: %q %v", resp.Payload, err)
	}
}

// FuzzInstall: any bytes as an archive never panic and never write outside
// the store; a refused install leaves the store empty.
func FuzzInstall(f *testing.F) {
	f.Add(tarGz(f, manifest("f", "1"), entry{name: "main.py", body: "x"}))
	f.Add(zipArchive(f, manifest("f", "1"), entry{name: "a/b", body: "x"}, entry{name: "l", link: "a/b"}))
	f.Add(tarGz(f, entry{name: "../x", body: "x"}))
	f.Add(zipArchive(f, entry{name: "l", link: "../../x"}))
	f.Fuzz(func(t *testing.T, archive []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "store")
		s, err := codepkg.Open(dir, &codepkg.Options{MaxBytes: 1 << 20, MaxFiles: 100})
		if err != nil {
			t.Fatal(err)
		}
		_, err = install(s, archive, "f", "1")
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("files written beside the store: %v", ents)
		}
		if err != nil {
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("store not empty after %v: %v", err, ents)
			}
		}
	})
}

// TestAllowedEnvAndLeftovers: a variable the store allows may be set; and
// what an install killed midway left is removed when the store opens.
func TestAllowedEnvAndLeftovers(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, ".unpack-12345")
	if err := os.MkdirAll(filepath.Join(left, "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := codepkg.Open(dir, &codepkg.Options{AllowEnv: []string{"PYTHONPATH"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("an interrupted install's directory is still there: %v", err)
	}
	archive := tarGz(t, entry{name: "function.json", body: `{"name":"h","version":"1","runtime":"python","handler":"m.h","env":{"PYTHONPATH":"lib"}}`})
	if _, err := install(s, archive, "h", "1"); err != nil {
		t.Fatalf("an allowed variable: %v", err)
	}
}

// TestKeyRotation: a store with the old key and the new one takes
// packages signed with either, and refuses a third.
func TestKeyRotation(t *testing.T) {
	oldPub, oldKey, _ := ed25519.GenerateKey(nil)
	newPub, newKey, _ := ed25519.GenerateKey(nil)
	_, strange, _ := ed25519.GenerateKey(nil)
	s, err := codepkg.Open(t.TempDir(), &codepkg.Options{PublicKeys: []ed25519.PublicKey{oldPub, newPub}})
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []ed25519.PrivateKey{oldKey, newKey, strange} {
		v := strconv.Itoa(i + 1)
		archive := tarGz(t, manifest("rotated", v), entry{name: "main.py", body: "x"})
		p := pkg(archive, "rotated", v)
		p.Signature = codepkg.Sign(key, archive)
		_, err := s.Install(context.Background(), bytes.NewReader(archive), p)
		if i < 2 && err != nil {
			t.Errorf("signed with key %d: %v", i, err)
		}
		if i == 2 && !errors.Is(err, codepkg.ErrSignature) {
			t.Errorf("signed with a key the store does not have: %v", err)
		}
	}
	if _, err := codepkg.Open(t.TempDir(), &codepkg.Options{PublicKeys: []ed25519.PublicKey{oldPub[:5]}}); err == nil {
		t.Error("a short key was taken")
	}
}

// TestGivenManifest: an archive of code alone (Link IoT Edge's zip) installs
// with the manifest the deployment gives, which Get reads back after a
// restart; one with a manifest of its own, or a given manifest the store
// refuses, is refused.
func TestGivenManifest(t *testing.T) {
	dir := t.TempDir()
	s, err := codepkg.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	code := zipArchive(t, entry{name: "index.js", body: "exports.handler = (e, c, cb) => cb(null, e);\n"})
	p := pkg(code, "link", "1")
	p.Manifest = &function.Spec{Name: "link", Version: "1", Runtime: function.RuntimeNode, Handler: "index.handler", Service: function.ServiceFC, Mode: function.Continuous}
	got, err := s.Install(context.Background(), bytes.NewReader(code), p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Handler != "index.handler" || got.Mode != function.Continuous || got.Service != function.ServiceFC || got.CodeDir != filepath.Join(dir, "link", "1") {
		t.Errorf("installed %+v", got)
	}
	s2, err := codepkg.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s2.Get("link", "1"); err != nil || again.Handler != got.Handler || again.Mode != got.Mode || again.Service != got.Service {
		t.Errorf("after a restart: %+v %v", again, err)
	}

	both := zipArchive(t, manifest("link", "2"), entry{name: "index.js", body: "x"})
	p = pkg(both, "link", "2")
	p.Manifest = &function.Spec{Name: "link", Version: "2", Runtime: function.RuntimeNode, Handler: "index.handler"}
	if _, err := s.Install(context.Background(), bytes.NewReader(both), p); !errors.Is(err, codepkg.ErrManifest) || !strings.Contains(err.Error(), "of its own") {
		t.Errorf("an archive with a manifest of its own and one given: %v", err)
	}
	p = pkg(code, "link", "3")
	p.Manifest = &function.Spec{Name: "link", Version: "3", Runtime: function.RuntimeNode, Handler: "../index.handler"}
	if _, err := s.Install(context.Background(), bytes.NewReader(code), p); !errors.Is(err, codepkg.ErrManifest) || !strings.Contains(err.Error(), "climbs out") {
		t.Errorf("a given manifest whose handler climbs out: %v", err)
	}
}
