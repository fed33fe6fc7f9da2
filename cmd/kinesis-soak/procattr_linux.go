package main

import "syscall"

// childProcAttr ties a consumer to this process: it is killed if the soak dies without stopping it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
