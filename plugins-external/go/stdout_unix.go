//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package plugin

import (
	"os"
	"syscall"
)

// claimStdout keeps the process's stdout for protocol messages and points
// file descriptor 1 (fmt.Println, child processes given os.Stdout) at stderr.
func claimStdout() *os.File {
	fd, err := syscall.Dup(1)
	if err != nil {
		return os.Stdout
	}
	syscall.CloseOnExec(fd)
	if err := dupTo(2, 1); err != nil {
		syscall.Close(fd)
		return os.Stdout
	}
	out := os.NewFile(uintptr(fd), "/dev/stdout")
	os.Stdout = os.Stderr
	return out
}
