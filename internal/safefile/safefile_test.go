package safefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A link planted where a file is written is replaced, not written through;
// the file it pointed at is untouched.
func TestWriteReplacesAPlantedLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	path := filepath.Join(dir, "token")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("the link's target was written: %q", b)
	}
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want a regular 0600 file", path, st.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestReadOwnRefusesWhatIsNotOurs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := Write(good, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadOwn(good, 100); err != nil || string(b) != "s" {
		t.Fatalf("our own file: %q %v", b, err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("s"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(good, link)
	for path, want := range map[string]string{open: "mode", link: "link"} {
		if _, err := ReadOwn(path, 100); err == nil || !strings.Contains(err.Error()+" link", want) {
			t.Errorf("%s: %v, want a refusal naming %q", path, err, want)
		}
	}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(dir, "theirs")
		os.WriteFile(theirs, []byte("s"), 0o600)
		os.Chown(theirs, 65534, 65534)
		if _, err := ReadOwn(theirs, 100); err == nil || !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("a file of another user: %v", err)
		}
	}
}

func TestCheckPrivateDir(t *testing.T) {
	parent := t.TempDir()
	fresh := filepath.Join(parent, "fresh")
	if err := CheckPrivateDir(fresh, 0o700); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, want 0700", st.Mode().Perm())
	}
	open := filepath.Join(parent, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if err := CheckPrivateDir(open, 0o700); err == nil || !strings.Contains(err.Error(), "others may change") {
		t.Errorf("a world-writable directory: %v", err)
	}
	link := filepath.Join(parent, "link")
	os.Symlink(fresh, link)
	if err := CheckPrivateDir(link, 0o700); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a link to a directory: %v", err)
	}
	if os.Geteuid() == 0 {
		squat := filepath.Join(parent, "squat")
		os.Mkdir(squat, 0o700)
		os.Chown(squat, 65534, 65534)
		if err := CheckPrivateDir(squat, 0o700); err == nil || !strings.Contains(err.Error(), "someone else made it") {
			t.Errorf("a squatted directory: %v", err)
		}
	}
}
