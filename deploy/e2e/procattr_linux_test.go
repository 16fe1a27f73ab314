package e2e

import (
	"os"
	"os/exec"
	"syscall"
)

// dieWithTest makes the kernel kill an instance when the test process dies,
// so that a killed or timed-out test run leaves no service behind. Run as
// root, the instance also gets a group id of its own (gid, when not 0), by
// which nftables rules can cut its sockets off the network (netcut_test.go);
// root's permissions do not depend on it.
func dieWithTest(cmd *exec.Cmd, gid uint32) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if gid != 0 && os.Getuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: gid, NoSetGroups: true}
	}
}
