// Package procstat reads a process's memory figures from Linux's
// /proc/<pid>/status: what the function host logs of an instance and what
// the benchmarks report of the process they measure.
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// KB returns the field of /proc/<pid>/status ("VmRSS", "VmHWM", ...) in
// kB; pid 0 is this process. It is 0 where the file or the field is not
// there (another OS, a process gone).
func KB(pid int, field string) int64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
