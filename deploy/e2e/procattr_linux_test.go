package e2e

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes the kernel kill an instance when the test process dies,
// so that a killed or timed-out test run leaves no service behind.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
