//go:build !linux

package consumerproc

import "syscall"

// childProcAttr has no parent-death signal outside Linux: stop the parent with Ctrl-C, not kill -9.
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
