package codepkg

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// limits bound what an archive may unpack to.
type limits struct {
	maxBytes int64
	maxFiles int
}

// unpacker writes archive entries under root, refusing anything that would
// land outside it or that is not a plain file, directory or contained link.
type unpacker struct {
	root    string
	lim     limits
	written int64
	files   int
	links   map[string]bool // symlinks this archive created (clean relative paths)
}

func newUnpacker(root string, lim limits) *unpacker {
	return &unpacker{root: root, lim: lim, links: make(map[string]bool)}
}

// unpack detects the format (gzip-compressed tar or zip) and unpacks data.
func unpack(data []byte, root string, lim limits) error {
	u := newUnpacker(root, lim)
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return u.tarGz(data)
	case bytes.HasPrefix(data, []byte("PK\x03\x04")), bytes.HasPrefix(data, []byte("PK\x05\x06")):
		return u.zip(data)
	default:
		return fmt.Errorf("%w: neither gzip-compressed tar nor zip", ErrFormat)
	}
}

// entryPath checks an archive path and returns it clean and relative.
func (u *unpacker) entryPath(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: entry %q: empty or contains NUL", ErrUnsafe, name)
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || (len(name) > 1 && name[1] == ':') {
		return "", fmt.Errorf("%w: entry %q: absolute path", ErrUnsafe, name)
	}
	clean := path.Clean(strings.ReplaceAll(name, `\`, "/"))
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: entry %q: leaves the package directory", ErrUnsafe, name)
	}
	// Writing through a link this archive made could land anywhere it
	// points; refuse any entry under one.
	for dir := path.Dir(clean); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if u.links[dir] {
			return "", fmt.Errorf("%w: entry %q: inside symbolic link %q", ErrUnsafe, name, dir)
		}
	}
	return clean, nil
}

// entry checks an entry's path and counts it against the entry bound.
func (u *unpacker) entry(name string) (string, error) {
	rel, err := u.entryPath(name)
	if err != nil {
		return "", err
	}
	u.files++
	if u.files > u.lim.maxFiles {
		return "", fmt.Errorf("%w: more than %d entries (at %q)", ErrTooLarge, u.lim.maxFiles, name)
	}
	return rel, nil
}

func (u *unpacker) dir(name string) error {
	rel, err := u.entry(name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	return os.MkdirAll(filepath.Join(u.root, filepath.FromSlash(rel)), 0o755)
}

func (u *unpacker) file(name string, mode fs.FileMode, r io.Reader) error {
	rel, err := u.entry(name)
	if err != nil {
		return err
	}
	if rel == "." {
		return fmt.Errorf("%w: entry %q: a file named like the root", ErrUnsafe, name)
	}
	dst := filepath.Join(u.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755 // keep "executable"; drop setuid, setgid, sticky and odd bits
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrUnsafe, name, err)
	}
	left := u.lim.maxBytes - u.written
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	u.written += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrFormat, name, err)
	}
	if n > left {
		return fmt.Errorf("%w: more than %d bytes unpacked (at %q)", ErrTooLarge, u.lim.maxBytes, name)
	}
	return nil
}

func (u *unpacker) symlink(name, target string) error {
	rel, err := u.entry(name)
	if err != nil {
		return err
	}
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return fmt.Errorf("%w: link %q -> %q: absolute or empty target", ErrUnsafe, name, target)
	}
	resolved := path.Clean(path.Join(path.Dir(rel), target))
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("%w: link %q -> %q: points outside the package", ErrUnsafe, name, target)
	}
	dst := filepath.Join(u.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(target, dst); err != nil {
		return fmt.Errorf("%w: link %q: %v", ErrUnsafe, name, err)
	}
	u.links[rel] = true
	return nil
}

func (u *unpacker) tarGz(data []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: tar: %v", ErrFormat, err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = u.dir(h.Name)
		case tar.TypeReg:
			err = u.file(h.Name, fs.FileMode(h.Mode), tr)
		case tar.TypeSymlink:
			err = u.symlink(h.Name, h.Linkname)
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
			continue
		default:
			err = fmt.Errorf("%w: entry %q: type %q (only files, directories and contained symbolic links)", ErrUnsafe, h.Name, string(h.Typeflag))
		}
		if err != nil {
			return err
		}
	}
}

func (u *unpacker) zip(data []byte) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("%w: zip: %v", ErrFormat, err)
	}
	if len(zr.File) > u.lim.maxFiles {
		return fmt.Errorf("%w: %d entries, more than %d", ErrTooLarge, len(zr.File), u.lim.maxFiles)
	}
	for _, f := range zr.File {
		mode := f.Mode()
		switch {
		case mode.IsDir():
			err = u.dir(f.Name)
		case mode&fs.ModeSymlink != 0:
			err = u.zipLink(f)
		case mode.IsRegular():
			err = u.zipFile(f)
		default:
			err = fmt.Errorf("%w: entry %q: mode %v (only files, directories and contained symbolic links)", ErrUnsafe, f.Name, mode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (u *unpacker) zipFile(f *zip.File) error {
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrFormat, f.Name, err)
	}
	defer rc.Close()
	return u.file(f.Name, f.Mode(), rc)
}

func (u *unpacker) zipLink(f *zip.File) error {
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrFormat, f.Name, err)
	}
	defer rc.Close()
	target, err := io.ReadAll(io.LimitReader(rc, 4096))
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrFormat, f.Name, err)
	}
	return u.symlink(f.Name, string(target))
}
