//go:build linux

package procstat_test

import (
	"os"
	"testing"

	"github.com/edgekit/edgekit/internal/procstat"
)

func TestKB(t *testing.T) {
	rss, peak := procstat.KB(0, "VmRSS"), procstat.KB(os.Getpid(), "VmHWM")
	if rss <= 0 || peak < rss {
		t.Fatalf("VmRSS %d kB, VmHWM %d kB", rss, peak)
	}
	if procstat.KB(0, "NoSuchField") != 0 || procstat.KB(1<<30, "VmRSS") != 0 {
		t.Fatal("a missing field or process reads as something")
	}
}
