//go:build !unix

package codepkg

// noFollow is 0 where the OS has no O_NOFOLLOW; the Lstat before each open
// and os.Root keep links out there.
const noFollow = 0
