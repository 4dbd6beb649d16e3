//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package plugin

import "os"

// claimStdout keeps stdout for protocol messages; os.Stdout (fmt.Println)
// is pointed at stderr, but child processes given file descriptor 1 are not.
func claimStdout() *os.File {
	out := os.Stdout
	os.Stdout = os.Stderr
	return out
}
