package function_test

import (
	"context"
	"os"
	"testing"

	"github.com/edgekit/edgekit/internal/vmtest"
)

// TestMemoryLimitCgroup2: the default memory limiter picks the cgroup v2
// memory controller where the host can use it, and an instance that
// allocates past its limit is killed and reported as out of memory. These
// machines bind the memory controller to cgroup v1, so the test boots a
// virtual machine whose init (internal/cgroup2guest) runs a host there.
func TestMemoryLimitCgroup2(t *testing.T) {
	kernel := vmtest.Kernel(t)
	initramfs := vmtest.Initramfs([]vmtest.File{
		{Path: "/init", Mode: 0o755, Data: vmtest.BuildStatic(t, "./internal/cgroup2guest")},
		{Path: "/bin", Mode: os.ModeDir | 0o755},
		{Path: "/bin/fn", Mode: 0o755, Data: vmtest.BuildStatic(t, "./internal/testfunctions/native")},
	})
	console := vmtest.Run(context.Background(), t, kernel, initramfs, nil)
	t.Log(vmtest.Result(t, console))
}
