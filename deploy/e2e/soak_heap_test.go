package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The soak's heap profiles: every service runs with PPROF_ADDR (a port of
// its own, which it logs), and the soak saves each one's heap profile at
// the minute the memory table starts from and at the end. Their
// difference says what the growth in between is made of: Pebble's own
// allocations (its memtables and block caches, which live in the Go heap
// without cgo and are bounded by configuration), or anything else.

// heapSnapshot is where the heap profiles of the service processes were
// saved at one minute, with each process's pid then: a process that was
// restarted in between is not compared.
type heapSnapshot struct {
	minute int
	files  map[string]string // process → profile file
	pids   map[string]int
}

// pprofAddrOf returns the address of the newest "pprof listening" line of
// a service's log ("" if none): a restarted process listens on a new one.
func pprofAddrOf(log string) string {
	addr := ""
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "pprof listening") {
			continue
		}
		var l struct{ Addr string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Addr != "" {
			addr = l.Addr
		}
	}
	return addr
}

// saveHeaps saves the heap profile of every service process of s into dir.
// A process without a profile (not listening, or killed meanwhile) is
// left out.
func saveHeaps(s *System, dir string, minute int, pids map[string]int) heapSnapshot {
	h := heapSnapshot{minute: minute, files: map[string]string{}, pids: pids}
	client := &http.Client{Timeout: 10 * time.Second}
	for name := range s.procs {
		addr := pprofAddrOf(s.logOf(name))
		if addr == "" {
			continue
		}
		resp, err := client.Get("http://" + addr + "/debug/pprof/heap")
		if err != nil {
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("heap-m%d-%s.pb.gz", minute, name))
		f, err := os.Create(path)
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			err = errors.Join(err, f.Close())
		}
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			h.files[name] = path
		}
	}
	return h
}

// pebbleAlloc matches Pebble's manual allocator: memtables and block cache
// buffers.
const pebbleAlloc = `pebble/v2/internal/manual\.New`

var pprofShowing = regexp.MustCompile(`Showing nodes accounting for (-?[0-9.]+)(?:MB)?, .* of (-?[0-9.]+)MB total`)

// pprofTop runs go tool pprof -top on a heap profile (in use bytes, MB)
// with args, and returns its output.
func pprofTop(args ...string) (string, error) {
	cmd := exec.Command("go", append([]string{"tool", "pprof", "-sample_index=inuse_space", "-unit=MB", "-top"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// heapTotals returns a heap profile's live bytes (sampled, MiB) and the
// part of them that Pebble's allocator holds.
func heapTotals(file string) (total, pebble float64, err error) {
	out, err := pprofTop("-nodecount=100000", "-focus="+pebbleAlloc, file)
	if err != nil {
		return 0, 0, err
	}
	m := pprofShowing.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no totals in the output of pprof for %s: %s", file, out)
	}
	pebble, _ = strconv.ParseFloat(m[1], 64)
	total, _ = strconv.ParseFloat(m[2], 64)
	return total, pebble, nil
}

var pprofRow = regexp.MustCompile(`^\s*(-?[0-9.]+)MB\s+[0-9.]+%\s+[0-9.]+%\s+-?[0-9.]+MB\s+[0-9.]+%\s+(\S+)`)

// grewOutsidePebble returns the functions whose live allocations grew most
// from the profile a to b outside Pebble's allocator ("name +x.y MB").
func grewOutsidePebble(a, b string, n int) (string, error) {
	out, err := pprofTop("-nodecount=50", "-ignore="+pebbleAlloc, "-base", a, b)
	if err != nil {
		return "", err
	}
	type fn struct {
		name string
		mb   float64
	}
	var fns []fn
	for _, line := range strings.Split(out, "\n") {
		if m := pprofRow.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			if v > 0 {
				fns = append(fns, fn{m[2], v})
			}
		}
	}
	sort.SliceStable(fns, func(i, j int) bool { return fns[i].mb > fns[j].mb })
	var parts []string
	for _, f := range fns[:min(n, len(fns))] {
		parts = append(parts, fmt.Sprintf("`%s` +%.1f", f.name, f.mb))
	}
	if len(parts) == 0 {
		return "nothing", nil
	}
	return strings.Join(parts, ", "), nil
}

// heapGrowth is the report's table of what the live heap of each service
// process that ran from a to b (not restarted) is made of at both, and
// what grew outside Pebble.
func heapGrowth(a, b heapSnapshot) string {
	var names []string
	for n := range b.files {
		if a.files[n] != "" && a.pids[n] == b.pids[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nThe live heap of the services that ran from minute %d to minute %d without a restart, from their heap profiles (sampled; MiB). Pebble's allocations are its memtables and block cache buffers, bounded by the stores' configuration.\n\n", a.minute, b.minute)
	sb.WriteString("| process | live heap | of it, Pebble's allocations | the rest | grew most outside Pebble (MiB) |\n|---|---|---|---|---|\n")
	for _, n := range names {
		ta, pa, errA := heapTotals(a.files[n])
		tb, pb, errB := heapTotals(b.files[n])
		grew, errG := grewOutsidePebble(a.files[n], b.files[n], 3)
		if err := errors.Join(errA, errB, errG); err != nil {
			first, _, _ := strings.Cut(err.Error(), "\n")
			fmt.Fprintf(&sb, "| %s | (%s) | | | |\n", n, first)
			continue
		}
		fmt.Fprintf(&sb, "| %s | %.1f → %.1f | %.1f → %.1f | %.1f → %.1f | %s |\n", n, ta, tb, pa, pb, ta-pa, tb-pb, grew)
	}
	if len(names) == 0 {
		sb.WriteString("| (every service was restarted in between) | | | | |\n")
	}
	return sb.String()
}
