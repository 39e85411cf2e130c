// Package testprograms is the TestMain of tests that run Go programs of
// their own (test functions): it builds them once for the test binary and
// checks for leaked goroutines after a passing run. It is apart from
// testenv so that the modules importing testenv need no goleak.
package testprograms

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// Main is a TestMain for tests that run Go programs: it
// builds each main package named (an import path, or a directory relative
// to the test's) into a temporary directory under its last path element,
// sets *dir to that directory, runs the tests, removes it, fails a passing
// run that leaked a goroutine, and exits.
func Main(m *testing.M, dir *string, pkgs ...string) {
	d, err := os.MkdirTemp("", "edgekit-test-programs-")
	if err != nil {
		panic(err)
	}
	for _, pkg := range pkgs {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(d, path.Base(pkg)), pkg).CombinedOutput(); err != nil {
			os.RemoveAll(d)
			panic(fmt.Sprintf("building test program %s: %v\n%s", pkg, err, out))
		}
	}
	*dir = d
	code := m.Run()
	os.RemoveAll(d)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
