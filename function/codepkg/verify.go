package codepkg

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// treeName is the file beside a version's code that lists what was
// unpacked: each entry's path, kind and content digest, so that Verify
// finds a file changed on disk after the install.
const treeName = ".tree"

// ErrDamaged: an installed version's files are not what was installed.
var ErrDamaged = errors.New("installed package damaged")

// treeListing lists root's entries but the store's own files, by path: a
// directory, a file (executable or not, its SHA-256) or a link (its
// target).
func treeListing(root *os.Root) ([]byte, error) {
	var out bytes.Buffer
	err := fs.WalkDir(root.FS(), ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == "." || path == digestName || path == treeName {
			return nil
		}
		switch t := e.Type(); {
		case t.IsDir():
			fmt.Fprintf(&out, "d %q\n", path)
		case t&fs.ModeSymlink != 0:
			target, err := root.Readlink(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "l %q %q\n", path, target)
		case t.IsRegular():
			info, err := e.Info()
			if err != nil {
				return err
			}
			f, err := root.OpenFile(path, os.O_RDONLY|noFollow, 0)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "f %q %t %s\n", path, info.Mode()&0o111 != 0, hex.EncodeToString(h.Sum(nil)))
		default:
			fmt.Fprintf(&out, "? %q %v\n", path, t)
		}
		return nil
	})
	return out.Bytes(), err
}

// Verify checks an installed version's files against what was installed:
// an error wrapping ErrDamaged names the first entry that differs (changed,
// missing or added). A version installed before listings were kept has
// nothing to be checked against, and passes.
func (s *Store) Verify(name, version string) error {
	if _, err := s.Digest(name, version); err != nil {
		return err
	}
	dir := filepath.Join(s.dir, name, version)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("codepkg: %w", err)
	}
	defer root.Close()
	want, err := readRegular(root, treeName, 64<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("codepkg: %s version %s: %w: its listing: %v", name, version, ErrDamaged, err)
	}
	got, err := treeListing(root)
	if err != nil {
		return fmt.Errorf("codepkg: %s version %s: %w: %v", name, version, ErrDamaged, err)
	}
	if bytes.Equal(got, want) {
		return nil
	}
	return fmt.Errorf("codepkg: %s version %s: %w: %s", name, version, ErrDamaged, firstDifference(want, got))
}

// firstDifference says which entry of two listings differs first.
func firstDifference(want, got []byte) string {
	w, g := bufio.NewScanner(bytes.NewReader(want)), bufio.NewScanner(bytes.NewReader(got))
	for {
		wok, gok := w.Scan(), g.Scan()
		switch {
		case !wok && !gok:
			return "the listing differs"
		case !gok:
			return "missing: " + entryOf(w.Text())
		case !wok:
			return "added: " + entryOf(g.Text())
		case w.Text() != g.Text():
			return "changed: " + entryOf(w.Text())
		}
	}
}

// entryOf is a listing line's path.
func entryOf(line string) string {
	if _, rest, ok := strings.Cut(line, " "); ok {
		if i := strings.Index(rest[1:], `"`); i >= 0 {
			return rest[:i+2]
		}
	}
	return line
}
