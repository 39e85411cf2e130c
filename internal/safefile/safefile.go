// Package safefile writes files so that what is already at the path, or a
// link planted there, is never written through: the content goes to a new
// temporary file in the same directory (created with O_EXCL, so a link or
// file of that name refuses it), which is then renamed over the path (a
// rename replaces a link, it does not follow it). A reader sees the old
// file or the new one, never a part.
package safefile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm.
func Write(path string, data []byte, perm fs.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("writing %s: %w", path, err), ignoreMissing(os.Remove(tmp)))
	}
	return nil
}

func ignoreMissing(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ReadOwn reads a small file that must be a regular file (not a link),
// owned by this process's user, and not readable or writable by anyone
// else: a secret this process wrote before. What is wrong is named.
func ReadOwn(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|oNofollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, st.Mode().Type())
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v: others may read or change it; want 0600", path, st.Mode().Perm())
	}
	if owner, ok := ownerOf(st); ok && owner != os.Geteuid() {
		return nil, fmt.Errorf("%s belongs to uid %d, not to this process's %d", path, owner, os.Geteuid())
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, over %d", path, st.Size(), max)
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

// CheckPrivateDir makes dir (mode perm) when it is missing, and refuses
// one that is a link, is owned by another user, or is writable by its
// group or others.
func CheckPrivateDir(dir string, perm fs.FileMode) error {
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory (%v)", dir, st.Mode().Type())
	}
	if owner, ok := ownerOf(st); ok && owner != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this process's %d: someone else made it", dir, owner, os.Geteuid())
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s has mode %v: others may change what is in it", dir, st.Mode().Perm())
	}
	return nil
}

// Secret reads a secret kept at path (a token, a password), or makes one
// (32 random hex digits) and keeps it there, 0600. One that is not this
// user's and 0600 is refused: whoever could write it knows it. One shorter
// than 16 characters is refused too.
func Secret(path string) (string, error) {
	b, err := ReadOwn(path, 1024)
	switch {
	case err == nil && len(bytes.TrimSpace(b)) >= 16:
		return string(bytes.TrimSpace(b)), nil
	case err == nil:
		return "", fmt.Errorf("%s holds no secret of 16 characters or more: remove it to have a new one made", path)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("not adopting %s: %w", path, err)
	}
	var r [16]byte
	_, _ = rand.Read(r[:])
	token := hex.EncodeToString(r[:])
	if err := Write(path, []byte(token+"\n"), 0o600); err != nil {
		return "", err
	}
	return token, nil
}
