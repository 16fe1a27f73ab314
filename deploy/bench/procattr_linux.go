package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel stop a started process when the bench
// dies, so that a killed run leaves no service behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
