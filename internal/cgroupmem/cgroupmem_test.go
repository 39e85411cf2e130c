package cgroupmem

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseOOMKill(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    uint64
		okay bool
	}{
		{"low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n", 2, true},    // v2 memory.events
		{"oom_kill_disable 0\nunder_oom 0\noom_kill 7\n", 7, true}, // v1 memory.oom_control
		{"oom_kill_disable 0\nunder_oom 0\n", 0, false},            // a kernel without the counter
		{"oom_kill x\n", 0, false},
		{"", 0, false},
	} {
		if n, ok := parseOOMKill([]byte(tc.in)); n != tc.n || ok != tc.okay {
			t.Errorf("parseOOMKill(%q) = %d, %v; want %d, %v", tc.in, n, ok, tc.n, tc.okay)
		}
	}
}

func FuzzParseOOMKill(f *testing.F) {
	f.Add([]byte("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n"))
	f.Add([]byte("oom 1\noom_kill 18446744073709551615\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if n, ok := parseOOMKill(data); !ok && n != 0 {
			t.Errorf("not found, yet %d", n)
		}
	})
}

func TestOOMKills(t *testing.T) {
	v1, v2, none := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(v1, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v2, "memory.events"), []byte("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]uint64{v1: 3, v2: 1} {
		if n, ok := OOMKills(dir); !ok || n != want {
			t.Errorf("OOMKills(%s) = %d, %v; want %d", dir, n, ok, want)
		}
	}
	if _, ok := OOMKills(none); ok {
		t.Error("a directory without the files read as a cgroup")
	}
}
