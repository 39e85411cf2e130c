//go:build !unix

package safefile

import "io/fs"

const oNofollow = 0

func ownerOf(fs.FileInfo) (int, bool) { return 0, false }
