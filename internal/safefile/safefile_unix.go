//go:build unix

package safefile

import (
	"io/fs"
	"syscall"
)

const oNofollow = syscall.O_NOFOLLOW

func ownerOf(st fs.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}
