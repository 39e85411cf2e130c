//go:build !unix

package safefile

import "io/fs"

const oNofollow = 0

func ownerOf(fs.FileInfo) (int, bool) { return 0, false }

// Searchable is checked on Unix only.
func Searchable(string, uint32, uint32) error { return nil }

// Readable is checked on Unix only.
func Readable(string, uint32, uint32) error { return nil }
