package codepkg_test

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgekit/edgekit/function/codepkg"
)

// TestPack: a function directory packed installs as the name and version
// it was stamped with, executables stay executable, dot files and
// caches stay out, and the same files make the same bytes.
func TestPack(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"function.json":                    `{"name":"whatever","version":"0","runtime":"python","handler":"main.handler"}`,
		"main.py":                          "def handler(e, c):\n    return e\n",
		"tool.sh":                          "#!/bin/sh\n",
		".secret":                          "not packed",
		"__pycache__/main.cpython-311.pyc": "cache",
	} {
		_ = os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		mode := os.FileMode(0o644)
		if name == "tool.sh" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	a, err := codepkg.Pack(dir, out, "alarm", "1.2")
	if err != nil {
		t.Fatal(err)
	}
	b, err := codepkg.Pack(dir, out, "alarm", "1.2")
	if err != nil || b.SHA256 != a.SHA256 || b.Size != a.Size {
		t.Fatalf("packed twice: %x and %x (%v)", a.SHA256, b.SHA256, err)
	}
	s, _ := codepkg.Open(t.TempDir(), nil)
	f, _ := os.Open(a.Path)
	defer f.Close()
	in, err := s.Install(context.Background(), f, codepkg.Package{Name: "alarm", Version: "1.2", SHA256: hex.EncodeToString(a.SHA256[:]), Size: a.Size})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(in.CodeDir, "tool.sh")); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("tool.sh: %v %v", st, err)
	}
	for _, gone := range []string{".secret", "__pycache__"} {
		if _, err := os.Stat(filepath.Join(in.CodeDir, gone)); err == nil {
			t.Errorf("%s was packed", gone)
		}
	}
}
