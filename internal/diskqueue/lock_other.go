//go:build !unix

package diskqueue

import (
	"os"
	"path/filepath"
)

// lockDir opens the lock file; without flock the directory is not locked.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
}
