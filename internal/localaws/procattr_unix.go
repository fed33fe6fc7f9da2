//go:build unix && !linux

package localaws

import "syscall"

// sysProcAttr has no parent-death signal outside Linux: servers of a test
// binary that is killed outright keep running there.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
