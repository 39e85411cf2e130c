//go:build unix

package safefile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

const oNofollow = syscall.O_NOFOLLOW

func ownerOf(st fs.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}

// Searchable reports whether a process of uid and gid (and no other
// groups) may pass through dir and every directory above it, and names
// the first that stops it.
func Searchable(dir string, uid, gid uint32) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		if err := allows(d, uid, gid, 0o1); err != nil {
			return err
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// Readable reports whether a process of uid and gid may reach path and
// read it (and list or run it, when it is a directory or executable).
func Readable(path string, uid, gid uint32) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := Searchable(filepath.Dir(abs), uid, gid); err != nil {
		return err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return err
	}
	want := os.FileMode(0o4)
	if st.IsDir() || st.Mode().Perm()&0o111 != 0 {
		want |= 0o1
	}
	return allows(abs, uid, gid, want)
}

// allows reports whether path's mode grants uid and gid the bits want
// (0o4 read, 0o2 write, 0o1 search or run), by the class they fall in.
func allows(path string, uid, gid uint32, want os.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	perm := st.Mode().Perm()
	bits := perm
	switch {
	case sys.Uid == uid:
		bits = perm >> 6
	case sys.Gid == gid:
		bits = perm >> 3
	}
	if bits&want != want {
		return fmt.Errorf("%s (mode %v, owner %d:%d) is out of reach of uid %d", path, perm, sys.Uid, sys.Gid, uid)
	}
	return nil
}
