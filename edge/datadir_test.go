package edge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataDirRefused: a data directory someone else made, or one others
// may write, is refused; so is a secret file that is not ours and 0600.
func TestDataDirRefused(t *testing.T) {
	parent := t.TempDir()
	open := filepath.Join(parent, "open")
	_ = os.Mkdir(open, 0o777)
	_ = os.Chmod(open, 0o777)
	if err := PrepareDataDir(open); err == nil || !strings.Contains(err.Error(), "others may change") {
		t.Errorf("a world-writable data directory: %v", err)
	}
	if os.Geteuid() == 0 {
		squat := filepath.Join(parent, "squat")
		_ = os.Mkdir(squat, 0o700)
		_ = os.Chown(squat, 65534, 65534)
		if err := PrepareDataDir(squat); err == nil || !strings.Contains(err.Error(), "someone else made it") {
			t.Errorf("a squatted data directory: %v", err)
		}
	}
	ours := filepath.Join(parent, "ours")
	if err := PrepareDataDir(ours); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(ours, "api-token")
	_ = os.WriteFile(planted, []byte("0123456789abcdef0123\n"), 0o644)
	if _, err := Secret(planted); err == nil || !strings.Contains(err.Error(), "not adopting") {
		t.Errorf("a token file others may read: %v", err)
	}
	fresh := filepath.Join(ours, "mqtt-password")
	a, err := Secret(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := Secret(fresh); err != nil || b != a {
		t.Errorf("the secret kept: %q then %q (%v)", a, b, err)
	}
}
