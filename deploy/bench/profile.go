package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// ProfileSummary is a CPU profile taken during a run, with pprof's view of
// it.
type ProfileSummary struct {
	// Run is the scenario (or "replay", "restart"); Proc the process.
	Run  string `json:"run"`
	Proc string `json:"proc"`
	// File is the profile (pprof format), for `go tool pprof FILE`.
	File    string `json:"file"`
	Seconds int    `json:"seconds"`
	// Header is pprof's line with the duration and the samples.
	Header string `json:"header"`
	// Flat is `go tool pprof -top` (the functions that use the CPU
	// themselves), Cum the same sorted by cumulative time.
	Flat []string `json:"flat"`
	Cum  []string `json:"cum"`
	// Breakdown, of the broker's profile, is where its samples went: by
	// the kind of request handled, or else by thread pool.
	Breakdown []string `json:"breakdown,omitempty"`
	// Goroutines are the largest groups of goroutines with the same
	// stack, halfway through the run (where a process waits rather than
	// computes); GoroutineFile the whole dump.
	Goroutines    []string `json:"goroutines,omitempty"`
	GoroutineFile string   `json:"goroutine_file,omitempty"`
}

// goroutineGroups summarises a goroutine dump (/debug/pprof/goroutine?debug=1):
// the n largest groups of goroutines with the same stack, those that run
// our own code (a profiles/ frame) first, the deepest first among equals.
// Each is its count and its innermost frames that are not the runtime's
// parking, up to two after the first of our own.
func goroutineGroups(dump string, n int) []string {
	type group struct {
		count, depth int
		ours         bool
		text         string
	}
	var groups []group
	for _, block := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) > 0 && strings.HasPrefix(lines[0], "goroutine profile") {
			lines = lines[1:]
		}
		if len(lines) < 2 || !strings.Contains(lines[0], " @ ") {
			continue
		}
		var g group
		if _, err := fmt.Sscan(lines[0], &g.count); err != nil {
			continue
		}
		var frames []string
		extra, depth := 2, 0 // frames shown after the first of our own; the stack's depth
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "#" {
				continue
			}
			fn := f[2]
			if i := strings.LastIndex(fn, "+0x"); i > 0 {
				fn = fn[:i]
			}
			if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/") || strings.HasPrefix(fn, "sync.runtime_") {
				continue
			}
			if len(frames) < 10 && extra > 0 {
				frames = append(frames, fn)
				if g.ours {
					extra--
				}
			}
			if strings.HasPrefix(fn, "profiles/") {
				g.ours = true
			}
			depth++
		}
		noise := len(frames) == 0 || strings.HasPrefix(frames[0], "os/signal.") || strings.HasPrefix(frames[0], "runtime/pprof.") ||
			strings.HasPrefix(frames[0], "github.com/rcrowley/go-metrics.")
		if noise {
			continue
		}
		if !g.ours && len(frames) > 5 {
			frames = frames[:5]
		}
		g.depth = depth
		g.text = fmt.Sprintf("%d × %s", g.count, strings.Join(frames, " ← "))
		groups = append(groups, g)
	}
	sort.SliceStable(groups, func(i, j int) bool {
		if groups[i].ours != groups[j].ours {
			return groups[i].ours
		}
		if groups[i].count != groups[j].count {
			return groups[i].count > groups[j].count
		}
		return groups[i].depth > groups[j].depth // a deep stack says more than an idle loop
	})
	var out []string
	for _, g := range groups[:min(n, len(groups))] {
		out = append(out, g.text)
	}
	return out
}

// fetchProfile GETs a pprof profile into file.
func fetchProfile(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s %s", url, resp.Status, body)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// summarizeProfile runs `go tool pprof -top` on a profile file.
func summarizeProfile(ctx context.Context, run, proc, file string, secs int) (*ProfileSummary, error) {
	s := &ProfileSummary{Run: run, Proc: proc, File: file, Seconds: secs}
	top := func(extra ...string) ([]string, string, error) {
		args := append([]string{"tool", "pprof", "-top"}, extra...)
		out, err := exec.CommandContext(ctx, "go", append(args, file)...).Output()
		if err != nil {
			return nil, "", fmt.Errorf("go tool pprof: %v", err)
		}
		var lines []string
		header, table := "", false
		for _, l := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(l, "Duration:"):
				header = strings.TrimSpace(l)
			case strings.Contains(l, "flat%") && strings.Contains(l, "cum%"):
				table = true
				lines = append(lines, strings.TrimRight(l, " "))
			case table && strings.TrimSpace(l) != "":
				lines = append(lines, strings.TrimRight(l, " "))
			}
		}
		return lines, header, nil
	}
	var err error
	if s.Flat, s.Header, err = top("-nodecount=15"); err != nil {
		return nil, err
	}
	if s.Cum, _, err = top("-cum", "-nodecount=30"); err != nil {
		return nil, err
	}
	return s, nil
}
