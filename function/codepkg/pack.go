package codepkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Packed is a package Pack made.
type Packed struct {
	Path   string
	Size   int64
	SHA256 [32]byte
}

// Pack makes a package of a function directory in the directory dest: a
// gzip-compressed tar of its regular files by name (dot files,
// __pycache__ and node_modules left out; only whether a file is
// executable kept), with its function.json stamped with name and version,
// streamed to the file (a Go function's binary is not held in memory).
// The same files make the same bytes.
func Pack(dir, dest, name, version string) (Packed, error) {
	path, size, sum, err := pack(dir, dest, name, version)
	return Packed{Path: path, Size: size, SHA256: sum}, err
}

func pack(dir, dest, name, version string) (path string, size int64, sum [32]byte, err error) {
	manifest, err := os.ReadFile(filepath.Join(dir, "function.json"))
	if err != nil {
		return "", 0, sum, err
	}
	var m map[string]any
	if err := json.Unmarshal(manifest, &m); err != nil {
		return "", 0, sum, fmt.Errorf("%s/function.json: %w", dir, err)
	}
	m["name"], m["version"] = name, version
	if manifest, err = json.MarshalIndent(m, "", "  "); err != nil {
		return "", 0, sum, err
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && e.Name() != "function.json" && !strings.HasPrefix(e.Name(), ".") {
			files = append(files, p)
		}
		if e.IsDir() && p != dir && (e.Name() == "__pycache__" || e.Name() == "node_modules") {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return "", 0, sum, err
	}
	slices.Sort(files)
	tmp, err := os.CreateTemp(dest, ".pack-*")
	if err != nil {
		return "", 0, sum, err
	}
	defer os.Remove(tmp.Name()) // renamed into place on success
	defer tmp.Close()
	digest := sha256.New()
	counted := &countingWriter{w: io.MultiWriter(tmp, digest)}
	zw, _ := gzip.NewWriterLevel(counted, gzip.BestSpeed) // a Go binary is megabytes: speed over size
	tw := tar.NewWriter(zw)
	add := func(rel string, mode, n int64, body io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: mode, Size: n, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, body)
		return err
	}
	if err := add("function.json", 0o644, int64(len(manifest)), bytes.NewReader(manifest)); err != nil {
		return "", 0, sum, err
	}
	for _, p := range files {
		if err := addFile(add, dir, p); err != nil {
			return "", 0, sum, err
		}
	}
	if err := tw.Close(); err != nil {
		return "", 0, sum, err
	}
	if err := zw.Close(); err != nil {
		return "", 0, sum, err
	}
	if err := tmp.Close(); err != nil {
		return "", 0, sum, err
	}
	copy(sum[:], digest.Sum(nil))
	path = filepath.Join(dest, fmt.Sprintf("%s-%s-%x.tar.gz", name, version, sum[:6]))
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", 0, sum, err
	}
	if err := os.Chmod(path, 0o644); err != nil {
		return "", 0, sum, err
	}
	return path, counted.n, sum, nil
}

// addFile adds one file of dir, keeping only whether it is executable.
func addFile(add func(rel string, mode, n int64, body io.Reader) error, dir, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(dir, path)
	mode := int64(0o644)
	if st.Mode()&0o111 != 0 {
		mode = 0o755
	}
	return add(filepath.ToSlash(rel), mode, st.Size(), f)
}

// countingWriter counts what goes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
