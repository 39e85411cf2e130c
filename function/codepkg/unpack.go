package codepkg

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
)

// limits bound what an archive may unpack to.
type limits struct {
	maxBytes int64
	maxFiles int // entries, the directories they imply included
}

// unpacker writes archive entries through an os.Root, so that the kernel,
// not the checks below, keeps every write inside the package directory;
// the checks name what an archive did wrong. It refuses anything that is
// not a plain file, a directory or a link that stays inside.
type unpacker struct {
	root    *os.Root
	lim     limits
	written int64
	entries int
	dirs    map[string]bool   // directories made (clean relative paths)
	links   map[string]string // symbolic links made: path → target
}

// reserved are names at the package root that the store writes itself.
var reserved = map[string]bool{digestName: true, treeName: true}

// unpack detects the format (gzip-compressed tar or zip), unpacks the
// archive into dir and checks that every link it made stays inside. The
// end of ctx stops it between reads.
func unpack(ctx context.Context, archive *os.File, dir string, lim limits) (*unpacker, error) {
	st, err := archive.Stat()
	if err != nil {
		return nil, err
	}
	data := ctxReaderAt{ctx, archive}
	var magic [4]byte
	n, _ := data.ReadAt(magic[:], 0)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	u := &unpacker{root: root, lim: lim, dirs: make(map[string]bool), links: make(map[string]string)}
	switch head := magic[:n]; {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		err = u.tarGz(io.NewSectionReader(data, 0, st.Size()))
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		err = u.zip(data, st.Size())
	default:
		err = fmt.Errorf("%w: neither gzip-compressed tar nor zip", ErrFormat)
	}
	if err == nil {
		err = u.checkLinks()
	}
	if err != nil {
		root.Close()
		return nil, err
	}
	return u, nil
}

func (u *unpacker) close() { u.root.Close() }

// ctxReaderAt ends a read when its context ends.
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(b, off)
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
	if reserved[clean] {
		return "", fmt.Errorf("%w: entry %q: a name the store keeps for itself", ErrUnsafe, name)
	}
	// Writing through a link this archive made could land anywhere it
	// points; refuse any entry under one.
	for dir := path.Dir(clean); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if _, ok := u.links[dir]; ok {
			return "", fmt.Errorf("%w: entry %q: inside symbolic link %q", ErrUnsafe, name, dir)
		}
	}
	return clean, nil
}

// count counts an entry, or a directory an entry implies, against the
// entry bound.
func (u *unpacker) count(name string) error {
	u.entries++
	if u.entries > u.lim.maxFiles {
		return fmt.Errorf("%w: more than %d entries, the directories they imply included (at %q)", ErrTooLarge, u.lim.maxFiles, name)
	}
	return nil
}

// entry checks an entry's path, counts it, and makes the directories it
// lies in.
func (u *unpacker) entry(name string) (string, error) {
	rel, err := u.entryPath(name)
	if err != nil {
		return "", err
	}
	if err := u.count(name); err != nil {
		return "", err
	}
	if err := u.mkdirs(name, path.Dir(rel)); err != nil {
		return "", err
	}
	return rel, nil
}

// mkdirs makes dir and its parents, each counted as an entry.
func (u *unpacker) mkdirs(name, dir string) error {
	if dir == "." || u.dirs[dir] {
		return nil
	}
	if err := u.mkdirs(name, path.Dir(dir)); err != nil {
		return err
	}
	if err := u.count(name); err != nil {
		return err
	}
	if err := u.root.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("%w: entry %q: directory %q: %v", ErrUnsafe, name, dir, err)
	}
	u.dirs[dir] = true
	return nil
}

func (u *unpacker) dir(name string) error {
	rel, err := u.entry(name)
	if err != nil || rel == "." || u.dirs[rel] {
		return err
	}
	if err := u.root.Mkdir(rel, 0o755); err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrUnsafe, name, err)
	}
	u.dirs[rel] = true
	return nil
}

func (u *unpacker) file(name string, mode fs.FileMode, r io.Reader) error {
	rel, err := u.entry(name)
	if err != nil {
		return err
	}
	if rel == "." {
		return fmt.Errorf("%w: entry %q: a file named like the root", ErrUnsafe, name)
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755 // keep "executable"; drop setuid, setgid, sticky and odd bits
	}
	// O_EXCL also refuses an existing link: nothing is written through one.
	f, err := u.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrUnsafe, name, err)
	}
	left := u.lim.maxBytes - u.written
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	u.written += n
	if err == nil {
		err = f.Sync() // on disk before the version is renamed into place
	}
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
	if rel == "." {
		return fmt.Errorf("%w: entry %q: a link named like the root", ErrUnsafe, name)
	}
	if _, err := u.resolve(path.Dir(rel) + "/" + target); err != nil { // not cleaned: "l/.." goes through l
		return fmt.Errorf("%w: link %q -> %q: points outside the package (%v)", ErrUnsafe, name, target, err)
	}
	if err := u.root.Symlink(target, rel); err != nil {
		return fmt.Errorf("%w: link %q: %v", ErrUnsafe, name, err)
	}
	u.links[rel] = target
	return nil
}

// errEscapes: a path climbs out of the package.
var errEscapes = errors.New("climbs out of the package")

// resolve follows p (relative to the package root, not yet cleaned of
// "..") component by component through the links this archive made, as
// the kernel would, and returns where it lands, or errEscapes. Links made
// later are judged by checkLinks.
func (u *unpacker) resolve(p string) (string, error) {
	parts := strings.Split(p, "/")
	cur, hops := ".", 0
	for len(parts) > 0 {
		part := parts[0]
		parts = parts[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if cur == "." {
				return "", errEscapes
			}
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, part)
		target, ok := u.links[next]
		if !ok {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", errors.New("too many levels of symbolic links")
		}
		parts = append(strings.Split(target, "/"), parts...) // relative to cur
	}
	return cur, nil
}

// checkLinks resolves every link the archive made once all are made: a
// link whose target passes through a link made after it is judged here.
func (u *unpacker) checkLinks() error {
	for _, rel := range slices.Sorted(maps.Keys(u.links)) {
		if _, err := u.resolve(rel); err != nil {
			return fmt.Errorf("%w: link %q -> %q: points outside the package through another link (%v)", ErrUnsafe, rel, u.links[rel], err)
		}
	}
	return nil
}

// readRegular reads rel under root, at most max bytes, when it is a
// regular file reached through no link.
func readRegular(root *os.Root, rel string, max int64) ([]byte, error) {
	st, err := root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %v, not a regular file", rel, st.Mode().Type())
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s is over %d bytes", rel, max)
	}
	return b, err
}

func (u *unpacker) tarGz(data io.Reader) error {
	zr, err := gzip.NewReader(data)
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

func (u *unpacker) zip(data io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(data, size)
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
