package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"profiles/platform/pebblex"
)

// needTmpfs skips the test, loudly, unless a tmpfs can be mounted here
// (root); under CI it fails instead.
func needTmpfs(t *testing.T) {
	t.Helper()
	why := ""
	if os.Getuid() != 0 {
		why = "a full disk is made with a small tmpfs, which needs root (mount -t tmpfs)"
	} else if _, err := exec.LookPath("mount"); err != nil {
		why = "a full disk needs the mount command"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but %s", why)
	}
	t.Skipf("SKIPPED: %s", why)
}

// mountTmpfs mounts a tmpfs of size MiB on dir (created if missing), and
// unmounts it when the test ends (after stop, which must stop whatever
// holds files on it).
func mountTmpfs(t *testing.T, dir string, size int, stop func()) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but mounting a tmpfs failed: %v: %s", err, out)
		}
		t.Skipf("SKIPPED: mounting a tmpfs on %s failed: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		stop()
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s; detaching it lazily", dir, err, out)
			if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
				t.Errorf("umount -l %s: %v: %s", dir, err, out)
			}
		}
	})
}

// fill allocates a file in dir that leaves about leave bytes free on its
// file system, and returns its path.
func fill(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	free, err := pebblex.FreeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	if free <= leave {
		t.Fatalf("only %d bytes free in %s before filling it", free, dir)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, int64(free-leave)); err != nil {
		t.Fatalf("fallocate %d bytes in %s: %v", free-leave, dir, err)
	}
	return path
}

// readyz returns an instance's /readyz status and body (0 when it does not answer).
func (s *System) readyz(name string) (int, string) {
	resp, err := http.Get(s.URLOf(name) + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logOf returns what an instance has logged so far.
func (s *System) logOf(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, name+".log"))
	return string(b)
}

// Scenario 12: the disk of a query-svc instance fills up under load. Its
// data directory is a small tmpfs; a file takes all but 8 MiB of it, below
// the view's reserve (DISK_RESERVE_MB, 32 here). The view refuses every
// batch rather than let Pebble fail a write (which ends the process): the
// instance says why on /readyz and in its log, steps out of its consumer
// group so that query-svc-1 serves all of its partitions meanwhile (it
// never serves them from a view that no longer moves), does not exit, and
// joins again and serves once the file is deleted.
func TestFaultQuerySvcDiskFull(t *testing.T) {
	needCluster(t)
	needTmpfs(t)
	const victim = "query-svc-0"
	s := startFaultSystem(t)
	s.Stop(victim)
	dir := s.DataDir(victim)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, dir, 128, func() { s.Stop(victim) })
	s.SetEnv(victim, "DISK_RESERVE_MB", "32")
	s.Start(victim)
	s.WaitReady(victim)

	l := newFaultLoad(t, s)
	l.Start(6, 2)
	time.Sleep(3 * time.Second)
	l.Mark(fmt.Sprintf("fill the tmpfs of %s (all but 8 MiB; its reserve is 32 MiB)", victim))
	filler := fill(t, dir, 8<<20)
	var unready string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body := s.readyz(victim); code == http.StatusServiceUnavailable && strings.Contains(body, "cannot apply") {
			unready = body
			break
		}
	}
	if unready == "" {
		t.Fatalf("%s did not report on /readyz that it cannot apply records within 30 s of its disk filling up", victim)
	}
	l.Mark(victim + " unready: " + strings.TrimSpace(unready))
	if !strings.Contains(unready, "full") {
		t.Errorf("/readyz of %s does not say that its disk is full: %s", victim, unready)
	}
	// The survivor takes every partition over: the victim left the group.
	tookOver := time.Now()
	for {
		owners := s.owners("query-svc-1")
		all := len(owners) == 6
		for _, id := range owners {
			all = all && id == "query-svc-1"
		}
		if all {
			break
		}
		if time.Since(tookOver) > 10*time.Second {
			t.Fatalf("query-svc-1 did not take over the partitions of %s within 10 s of it stepping aside: %v", victim, owners)
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.Mark(fmt.Sprintf("query-svc-1 owns every partition, %.1f s after %s reported unready", time.Since(tookOver).Seconds(), victim))
	time.Sleep(10 * time.Second)
	if code, body := s.readyz(victim); code != http.StatusServiceUnavailable {
		t.Errorf("%s became ready while its disk was still full: %d %s", victim, code, body)
	}
	if s.Exited(victim) {
		t.Fatalf("%s exited on a full disk", victim)
	}
	l.Mark("delete the filler")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	s.WaitReady(victim)
	recovered := time.Since(freed)
	l.Mark(fmt.Sprintf("%s ready again after %.1f s", victim, recovered.Seconds()))
	if !l.WaitWrites(10, 60*time.Second) {
		t.Error("writes did not resume within 60 s after the disk had space again")
	}
	time.Sleep(2 * time.Second)
	l.Stop()
	log := s.logOf(victim)
	for _, want := range []string{"cannot apply records; the partition is not served until they apply", "the disk of the store is (nearly) full",
		"stepping out of the consumer group", "able to apply records again; rejoining the consumer group"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log of %s lacks %q", victim, want)
		}
	}
	l.Verify("12. a query-svc instance's disk full for 10 s (a filled tmpfs)",
		fmt.Sprintf("%s's view refuses every batch below its reserve (DISK_RESERVE_MB) instead of letting Pebble fail a write; it reports unready with the reason and steps out of its group, so query-svc-1 serves its partitions meanwhile; it rejoined and was ready again %.1f s after the space returned", victim, recovered.Seconds()))
}
