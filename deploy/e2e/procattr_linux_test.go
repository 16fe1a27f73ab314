package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// dieWithTest makes the kernel kill an instance when the test process dies,
// so that a killed or timed-out test run leaves no service behind. Run as
// root, the instance also gets a group id of its own (gid, when not 0) and,
// where the machine has a cgroup v2 hierarchy that root can write, starts
// in a cgroup of its own named after that group id (gidCgroup), by which
// nftables rules can cut its sockets off the network (netcut_test.go);
// root's permissions do not depend on either.
func dieWithTest(cmd *exec.Cmd, gid uint32) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if gid == 0 || os.Getuid() != 0 {
		return
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: gid, NoSetGroups: true}
	if fd, ok := cgroupFD(gid); ok {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
}

// gidCgroup names the cgroup, directly under the cgroup v2 root, that the
// instances and brokers of group id gid run in. deploy/kafka.sh
// (start-cluster --gids) names its brokers' cgroups the same way.
func gidCgroup(gid uint32) string { return fmt.Sprintf("profiles-gid-%d", gid) }

// cgroup2Root returns where the cgroup v2 hierarchy is mounted (the whole
// of /sys/fs/cgroup, or its "unified" part on a hybrid host), or "".
var cgroup2Root = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE ...
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && f[3] == "/" {
			return f[4]
		}
	}
	return ""
})

var cgroupFDs struct {
	sync.Mutex
	fds     map[uint32]int
	created []string
}

// cgroupFD returns an open directory of gid's cgroup (made if need be) for
// clone3's CLONE_INTO_CGROUP, or false where there is none to make. The
// descriptors stay open for the test process's life, one per group id.
func cgroupFD(gid uint32) (int, bool) {
	root := cgroup2Root()
	if root == "" {
		return 0, false
	}
	cgroupFDs.Lock()
	defer cgroupFDs.Unlock()
	if fd, ok := cgroupFDs.fds[gid]; ok {
		return fd, true
	}
	dir := filepath.Join(root, gidCgroup(gid))
	if err := os.Mkdir(dir, 0o755); err == nil {
		cgroupFDs.created = append(cgroupFDs.created, dir)
	} else if !os.IsExist(err) {
		return 0, false
	}
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	if cgroupFDs.fds == nil {
		cgroupFDs.fds = map[uint32]int{}
	}
	cgroupFDs.fds[gid] = fd
	return fd, true
}

// removeCgroups closes the cgroups' descriptors and removes the cgroups
// this test process made, where no process runs in them any more.
func removeCgroups() {
	cgroupFDs.Lock()
	defer cgroupFDs.Unlock()
	for gid, fd := range cgroupFDs.fds {
		syscall.Close(fd)
		delete(cgroupFDs.fds, gid)
	}
	for _, dir := range cgroupFDs.created {
		_ = syscall.Rmdir(dir)
	}
	cgroupFDs.created = nil
}

// nftSocketsOf returns the nftables expression that matches the sockets of
// process pid, which runs under group id gid: its cgroup, when pid runs in
// gidCgroup(gid) (nftables then knows a socket's owner for as long as the
// socket lives), else its group id, and whether it is the cgroup.
func nftSocketsOf(pid int, gid uint32) (expr string, byCgroup bool) {
	byGID := fmt.Sprintf("meta skgid %d", gid)
	root := cgroup2Root()
	rel, under := strings.CutPrefix(root, "/sys/fs/cgroup")
	if root == "" || !under || pid == 0 {
		return byGID, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return byGID, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::/"); ok && path == gidCgroup(gid) {
			// nft resolves the path under /sys/fs/cgroup; level 1 is a
			// cgroup right under the v2 root.
			return fmt.Sprintf(`socket cgroupv2 level 1 "%s"`, strings.TrimPrefix(rel+"/"+path, "/")), true
		}
	}
	return byGID, false
}
