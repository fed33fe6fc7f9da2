package consumerproc

import "syscall"

// childProcAttr ties a consumer to this process: it is killed if its parent dies without stopping it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
