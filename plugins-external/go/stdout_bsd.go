//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package plugin

import "syscall"

func dupTo(oldfd, newfd int) error { return syscall.Dup2(oldfd, newfd) }
