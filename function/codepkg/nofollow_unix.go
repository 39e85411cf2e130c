//go:build unix

package codepkg

import "syscall"

// noFollow refuses to open a symbolic link as the last component.
const noFollow = syscall.O_NOFOLLOW
