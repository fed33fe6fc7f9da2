//go:build !linux

package main

import "syscall"

// childProcAttr has no parent-death signal outside Linux: stop the soak with Ctrl-C, not kill -9.
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
