package localaws

import "syscall"

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		// Own process group: Stop signals the whole group, and a terminal's
		// Ctrl-C reaches only the test binary, whose Run then stops the servers.
		Setpgid: true,
		// The servers must not outlive a test binary that panics or is killed.
		// The signal is tied to the forking OS thread; Go ends a thread only
		// when a goroutine exits while locked to it, which none here does.
		Pdeathsig: syscall.SIGKILL,
	}
}
