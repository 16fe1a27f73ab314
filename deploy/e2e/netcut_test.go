package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Network partitions on loopback. Every instance runs under a group id of
// its own (gidOf, set by dieWithTest when the tests run as root), and a cut
// is an nftables table that drops what that group's sockets send to some
// ports: the instance can no longer reach them (its SYNs and ACKs are
// lost), while everything else still reaches it and it everything else.
// Nothing leaves the machine: the rules match loopback ports only.

// gidBase is the first group id given to instances (one per System-wide
// instance number); nothing else on the machine runs under these ids.
const gidBase = 47000

var gids struct {
	sync.Mutex
	next uint32
}

// newGID returns a group id no other instance of this test process has.
func newGID() uint32 {
	gids.Lock()
	defer gids.Unlock()
	gids.next++
	return gidBase + gids.next
}

// needNetCut skips the test, loudly, unless network partitions can be made
// here (root and the nft command); under CI it fails instead, since .ci/run
// installs nftables.
func needNetCut(t *testing.T) {
	t.Helper()
	why := ""
	if os.Getuid() != 0 {
		why = "network partitions need root (nftables rules, per-instance group ids)"
	} else if _, err := exec.LookPath("nft"); err != nil {
		why = "network partitions need the nft command (Debian's nftables package)"
	} else if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil {
		why = fmt.Sprintf("nft cannot read the ruleset: %v: %s", err, out)
	}
	if why == "" {
		removeStaleCuts(t)
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but %s", why)
	}
	t.Skipf("SKIPPED: %s", why)
}

// cutPrefix starts the name of every nftables table of a cut; the test
// process's pid and the group id follow.
const cutPrefix = "profiles_e2e_cut_"

// removeStaleCuts deletes the cuts left behind by test processes that are
// gone (killed before their cleanup ran): group ids start again at
// gidBase in every process, so such a cut would cut a new instance off.
func removeStaleCuts(t *testing.T) {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		t.Fatalf("nft list tables: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // "table inet NAME"
		if len(f) != 3 || !strings.HasPrefix(f[2], cutPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.Split(strings.TrimPrefix(f[2], cutPrefix), "_")[0])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", f[1], f[2]).CombinedOutput(); err != nil {
			t.Fatalf("removing the stale cut %s: %v: %s", f[2], err, out)
		}
		t.Logf("removed the cut %s of a test process that is gone", f[2])
	}
}

// Cut drops everything instance name sends to ports, until the returned
// heal is called (the test's cleanup calls it too).
func (s *System) Cut(name string, ports ...int) (heal func()) {
	s.t.Helper()
	gid := s.gids[name]
	if gid == 0 {
		s.t.Fatalf("%s has no group id of its own to cut it by", name)
	}
	return cut(s.t, name, gid, cutRule{gids: []uint32{gid}, ports: ports})
}

// cutRule drops what the sockets of the processes of gids send to ports.
type cutRule struct {
	gids  []uint32
	ports []int
}

// cut installs the rules as one nftables table named after gid, until
// the returned heal is called (the test's cleanup calls it too).
func cut(t *testing.T, name string, gid uint32, rules ...cutRule) (heal func()) {
	t.Helper()
	join := func(xs []string) string { return strings.Join(xs, ", ") }
	table := fmt.Sprintf("%s%d_%d", cutPrefix, os.Getpid(), gid)
	var lines []string
	for _, r := range rules {
		var gs, ps []string
		for _, g := range r.gids {
			gs = append(gs, strconv.FormatUint(uint64(g), 10))
		}
		for _, p := range r.ports {
			ps = append(ps, strconv.Itoa(p))
		}
		lines = append(lines, fmt.Sprintf("\t\tmeta skgid { %s } tcp dport { %s } drop", join(gs), join(ps)))
	}
	text := fmt.Sprintf(`table inet %s {
	chain out {
		type filter hook output priority 0; policy accept;
%s
	}
}
`, table, strings.Join(lines, "\n"))
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s\n%s", err, out, text)
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
				t.Errorf("removing the cut of %s: %v: %s", name, err, out)
			}
		})
	}
	t.Cleanup(heal)
	return heal
}

// portsOf returns the ports of a comma-separated list of host:port.
func portsOf(t *testing.T, addrs string) []int {
	t.Helper()
	var out []int
	for _, a := range strings.Split(addrs, ",") {
		_, p, err := net.SplitHostPort(strings.TrimSpace(a))
		if err != nil {
			t.Fatalf("address %q: %v", a, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("port of %q: %v", a, err)
		}
		out = append(out, n)
	}
	return out
}

// portOf returns the HTTP port of instance name.
func (s *System) portOf(name string) int { return s.ports[name] }

// gid returns the group id node n runs under (deploy/kafka.sh
// start-cluster --gids), or 0.
func (c *kafkaCluster) gid(n int) uint32 {
	b, err := os.ReadFile(filepath.Join(c.dir(n), "kafka.gid"))
	if err != nil {
		return 0
	}
	g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0
	}
	return uint32(g)
}

// runsUnderGID reports whether node n's broker runs under its group id (it was
// started by deploy/kafka.sh with --gids, as root).
func (c *kafkaCluster) runsUnderGID(n int) bool {
	g := c.gid(n)
	pid := c.pid(n)
	if g == 0 || pid == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Gid:" {
			return f[1] == strconv.FormatUint(uint64(g), 10)
		}
	}
	return false
}

// CutBroker cuts node n off from the other two nodes, both ways, brokers
// and controllers (the quorum), while every client still reaches it: what
// n sends to the others' ports is dropped, and what they send to n's.
func (c *kafkaCluster) CutBroker(n int) (heal func()) {
	c.t.Helper()
	brokers := portsOf(c.t, clusterBrokers)
	var others []uint32
	var otherPorts []int
	for i := 1; i <= 3; i++ {
		if !c.runsUnderGID(i) {
			c.t.Fatalf("broker %d does not run under a group id of its own (deploy/kafka.sh start-cluster --gids, as root)", i)
		}
		if i != n {
			others = append(others, c.gid(i))
			otherPorts = append(otherPorts, brokers[i-1], brokers[i-1]+10) // the controller: broker port + 10
		}
	}
	own := []int{brokers[n-1], brokers[n-1] + 10}
	return cut(c.t, fmt.Sprintf("broker %d", n), c.gid(n),
		cutRule{gids: []uint32{c.gid(n)}, ports: otherPorts},
		cutRule{gids: others, ports: own})
}
