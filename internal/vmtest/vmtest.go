// Package vmtest runs a test program as init of a throwaway Linux virtual
// machine (qemu-system-x86_64 booting the machine's own kernel from /boot
// with an initramfs the test builds), for what a test cannot set up on the
// machine it runs on: a cgroup v2 hierarchy with the memory controller,
// say, where the host binds that controller to cgroup v1.
//
// The guest program is a static Go binary; it prints its result on the
// console and powers the machine off. Emulation is software (TCG): nested
// KVM is not dependable on CI machines.
package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/internal/vmtest/guest"
)

// Qemu is the emulator this package runs.
const Qemu = "qemu-system-x86_64"

// Kernel returns the newest kernel image in /boot; it fails the test under
// CI when there is none (the Debian package linux-image-amd64 has one),
// and skips it elsewhere.
func Kernel(t testing.TB) string {
	t.Helper()
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(images) == 0 {
		testenv.Missing(t, errors.New("no kernel image in /boot (Debian package linux-image-amd64)"))
	}
	slices.Sort(images)
	return images[len(images)-1]
}

// File is one file of the initramfs.
type File struct {
	Path string      // absolute, in the guest
	Mode os.FileMode // permission bits, plus os.ModeDir or os.ModeCharDevice
	Data []byte      // a regular file's content
	Dev  [2]int      // a device's major and minor number
}

// Initramfs encodes files as a newc cpio archive, which the kernel unpacks
// as its root file system. /dev/console and the directories /dev, /proc,
// /sys and /tmp are added.
func Initramfs(files []File) []byte {
	base := []File{
		{Path: "/dev", Mode: os.ModeDir | 0o755},
		{Path: "/dev/console", Mode: os.ModeCharDevice | os.ModeDevice | 0o600, Dev: [2]int{5, 1}},
		{Path: "/proc", Mode: os.ModeDir | 0o555},
		{Path: "/sys", Mode: os.ModeDir | 0o555},
		{Path: "/tmp", Mode: os.ModeDir | 0o1777},
	}
	var b bytes.Buffer
	for i, f := range append(base, files...) {
		writeEntry(&b, i+1, f)
	}
	writeEntry(&b, 0, File{Path: "TRAILER!!!"})
	return b.Bytes()
}

func writeEntry(b *bytes.Buffer, ino int, f File) {
	mode := uint32(f.Mode.Perm())
	switch {
	case f.Path == "TRAILER!!!":
	case f.Mode&os.ModeDir != 0:
		mode |= 0o040000
	case f.Mode&os.ModeCharDevice != 0:
		mode |= 0o020000
	default:
		mode |= 0o100000
	}
	if f.Mode&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	name := strings.TrimPrefix(f.Path, "/")
	fmt.Fprintf(b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, 1, 0, len(f.Data), 0, 0, f.Dev[0], f.Dev[1], len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad(b)
	b.Write(f.Data)
	pad(b)
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// BuildStatic compiles the Go package pkg (a path go build accepts) into a
// static binary and returns it.
func BuildStatic(t testing.TB, pkg string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Options shape a run.
type Options struct {
	MemoryMB int           // default 512
	Timeout  time.Duration // default 5 minutes
	Cmdline  string        // appended to the kernel command line
}

// Run boots kernel with initramfs, its /init the guest program, and
// returns what the machine printed on its console once it powered off.
func Run(ctx context.Context, t testing.TB, kernel string, initramfs []byte, o *Options) string {
	t.Helper()
	testenv.Tool(t, Qemu)
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 512
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(initrd, initramfs, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Qemu, "-accel", "tcg", "-m", fmt.Sprint(opts.MemoryMB), "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init "+opts.Cmdline)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	console := strings.ReplaceAll(out.String(), "\r", "")
	if ctx.Err() != nil {
		t.Fatalf("the virtual machine did not power off within %v; console:\n%s", opts.Timeout, console)
	}
	if err != nil {
		t.Fatalf("%s: %v; console:\n%s", Qemu, err, console)
	}
	return console
}

// Result finds the guest's result line (package guest) in console: the
// test fails when the guest failed or printed none.
func Result(t testing.TB, console string) string {
	t.Helper()
	for line := range strings.SplitSeq(console, "\n") {
		if rest, ok := strings.CutPrefix(line, guest.ResultPrefix); ok {
			if detail, ok := strings.CutPrefix(rest, "PASS "); ok {
				return detail
			}
			t.Fatalf("in the virtual machine: %s\nconsole:\n%s", rest, console)
		}
	}
	t.Fatalf("the guest printed no result; console:\n%s", console)
	return ""
}
