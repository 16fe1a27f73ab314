package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"profiles/deploy/internal/portalloc"
)

// pprofOverlay is added to the main package of each binary the bench
// builds, with `go build -overlay`: the services do not expose
// /debug/pprof, and the bench must not change their code. When
// PROFILES_BENCH_PPROF_ADDR is set, it serves net/http/pprof there, on a
// listener of its own, apart from the service's router. Without it the
// binary behaves exactly as the one `make build` makes.
const pprofOverlay = `// Code added by the bench at build time (go build -overlay); not in the repository.

package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("PROFILES_BENCH_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

// binaries are the programs the bench runs: module, package, name.
var binaries = []struct{ module, pkg, name string }{
	{"query-svc", "./cmd/query-svc", "query-svc"},
	{"command-svc", "./cmd/command-svc", "command-svc"},
	{"projections", "./cmd/projector", "projector"},
	{"projections", "./cmd/replay", "replay"},
	{"deploy", "./cmd/frontdoor", "frontdoor"},
}

// Build builds the binaries the bench runs into dir, each with the pprof
// overlay (see pprofOverlay).
func Build(ctx context.Context, repo, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	src := filepath.Join(dir, "zz_bench_pprof.go")
	if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
		return err
	}
	replace := map[string]string{}
	for _, b := range binaries {
		replace[filepath.Join(repo, b.module, b.pkg, "zz_bench_pprof.go")] = src
	}
	overlay := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlay, mustJSON(map[string]any{"Replace": replace}), 0o644); err != nil {
		return err
	}
	// -trimpath: the profiles and goroutine dumps that go into
	// deploy/bench/results name files by module path, not by where this
	// machine keeps them. Concurrently: most of the time goes to linking,
	// which uses one core.
	errs := make([]error, len(binaries))
	var wg sync.WaitGroup
	for i, b := range binaries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-overlay", overlay, "-o", filepath.Join(dir, b.name), b.pkg)
			cmd.Dir = filepath.Join(repo, b.module)
			// Without cgo, as make build and deploy/Dockerfile build them:
			// Pebble then allocates its caches in the Go heap, not with C
			// malloc, whose per-thread arenas kept query-svc's RSS at
			// twice its caches (see BENCH.md).
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", b.name, err, out)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Proc is one process the bench started: a service instance, the replay
// CLI or the HTTP ceiling.
type Proc struct {
	Name string
	// Port is the HTTP port; PprofPort serves /debug/pprof (0: none).
	Port, PprofPort int
	Args            []string
	Env             []string
	LogPath         string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	start time.Time
}

// URL is the base URL of the process's HTTP server.
func (p *Proc) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Port) }

// PprofURL is the base URL of its pprof server, or "" without one.
func (p *Proc) PprofURL() string {
	if p.PprofPort == 0 {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d", p.PprofPort)
}

// Start starts the process, appending its output to LogPath.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s is running", p.Name)
		}
	}
	log, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done, p.err, p.start = cmd, make(chan struct{}), nil, time.Now()
	done := p.done
	go func() {
		err := cmd.Wait()
		log.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Started is when the process was last started.
func (p *Proc) Started() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.start
}

// logTimeline reads the JSON log lines a process wrote from offset on
// and returns the first line of each message within limit of start, as
// "+1.234s message (field=value...)": where a start spends its time.
func logTimeline(path string, offset int64, start time.Time, limit time.Duration) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(out) < 16 {
		var line struct {
			Time       time.Time `json:"time"`
			Msg        string    `json:"msg"`
			Partitions any       `json:"partitions"`
			Topic      string    `json:"topic"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg == "" || seen[line.Msg] {
			continue
		}
		d := line.Time.Sub(start)
		if d > limit {
			break
		}
		seen[line.Msg] = true
		extra := ""
		if line.Partitions != nil {
			extra = fmt.Sprintf(" (partitions %v)", line.Partitions)
		}
		out = append(out, fmt.Sprintf("%+.3fs %s%s", d.Seconds(), line.Msg, extra))
	}
	return out
}

// PID is the process id, or 0 when it never started.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running tells whether the process was started and has not exited.
func (p *Proc) Running() bool {
	done := p.exited()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// exited returns the channel that is closed when the process of the last
// start exits, or nil before the first start.
func (p *Proc) exited() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Wait waits for the process to exit and returns its error.
func (p *Proc) Wait() error {
	done := p.exited()
	if done == nil {
		return nil
	}
	<-done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill sends SIGKILL and waits for the exit: a crash, with no drain.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop sends SIGTERM and waits up to grace for the exit, then SIGKILLs. It
// returns how long the process took to exit.
func (p *Proc) Stop(grace time.Duration) time.Duration {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return 0
	}
	t0 := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	return time.Since(t0)
}

// Ready polls /healthz and /readyz every 10 ms until /readyz answers 200
// and returns how long after the start each first answered 200.
func (p *Proc) Ready(ctx context.Context, timeout time.Duration) (healthy, ready time.Duration, err error) {
	p.mu.Lock()
	start, done := p.start, p.done
	p.mu.Unlock()
	client := &http.Client{Timeout: 2 * time.Second}
	ok := func(path string) bool {
		resp, err := client.Get(p.URL() + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	deadline := time.Now().Add(timeout)
	for {
		if healthy == 0 && ok("/healthz") {
			healthy = time.Since(start)
		}
		if healthy != 0 && ok("/readyz") {
			return healthy, time.Since(start), nil
		}
		select {
		case <-done:
			return 0, 0, fmt.Errorf("%s exited during start-up (see %s): %v", p.Name, p.LogPath, p.Wait())
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s not ready after %s (see %s)", p.Name, timeout, p.LogPath)
		}
	}
}

// RSS returns the resident set size of a process in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) < 1 {
				break
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat; it
// is 100 on every Linux the bench runs on.
const clockTicks = 100

// CPUSeconds returns the CPU time (user + system) a process has used.
func CPUSeconds(pid int) (float64, error) {
	return statCPUSeconds(fmt.Sprintf("/proc/%d/stat", pid))
}

// statCPUSeconds reads the CPU time (user + system) from a stat file of
// /proc (a process's, or one of its threads').
func statCPUSeconds(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("malformed stat")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (utime + stime) / clockTicks, nil
}

// ThreadCPUSeconds returns the CPU time (user + system) that the threads
// of a process whose name (/proc/<pid>/task/<tid>/comm, at most 15 bytes)
// match have used. A thread that has ended takes its time with it, so it
// suits threads that live as long as the process: HotSpot keeps its first
// C1 and C2 compiler threads for the JVM's life (on 2 cores it runs only
// those two), and only starts and stops further ones as the queue of work
// grows and shrinks.
func ThreadCPUSeconds(pid int, match func(comm string) bool) (float64, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, t := range tasks {
		comm, err := os.ReadFile(filepath.Join(dir, t.Name(), "comm"))
		if err != nil || !match(strings.TrimSpace(string(comm))) {
			continue // a thread that ended meanwhile, or another one
		}
		if s, err := statCPUSeconds(filepath.Join(dir, t.Name(), "stat")); err == nil {
			sum += s
		}
	}
	return sum, nil
}

// JITThread reports whether a thread name is one of a HotSpot JVM's JIT
// compiler threads ("C1 CompilerThread0", "C2 CompilerThread1", cut to
// 15 bytes by the kernel).
func JITThread(comm string) bool {
	return strings.HasPrefix(comm, "C1 CompilerThre") || strings.HasPrefix(comm, "C2 CompilerThre")
}

// cpuSource returns a CPU time in seconds (CPUSeconds of a process, or a
// part of it).
type cpuSource func() (float64, error)

// cpuMeter measures how many cores each of a set of CPU sources used over
// an interval.
type cpuMeter struct {
	sources map[string]cpuSource
	start   map[string]float64
	t0      time.Time
}

func startCPU(sources map[string]cpuSource) *cpuMeter {
	m := &cpuMeter{sources: sources, start: map[string]float64{}, t0: time.Now()}
	for name, src := range sources {
		if s, err := src(); err == nil {
			m.start[name] = s
		}
	}
	return m
}

// stop returns the cores used by each source since start (CPU seconds per
// second of wall time).
func (m *cpuMeter) stop() map[string]float64 {
	wall := time.Since(m.t0).Seconds()
	out := map[string]float64{}
	for name, src := range m.sources {
		s0, ok := m.start[name]
		if !ok {
			continue
		}
		if s, err := src(); err == nil && wall > 0 {
			out[name] = round2((s - s0) / wall)
		}
	}
	return out
}

// benchPorts hands out ports when no PortBase is configured (the harness
// test). Its block is disjoint from the end-to-end tests' (deploy/e2e),
// which run at the same time, and from make bench's fixed ports (29392+).
// PROFILES_BENCH_PORTS=lo-hi moves it, for runs that share a machine.
var benchPorts = portalloc.FromEnv("PROFILES_BENCH_PORTS", 27000, 29000)

// freePorts returns n ports, free now and handed out by nothing else in
// this process.
func freePorts(n int) ([]int, error) {
	ps := make([]int, n)
	for i := range ps {
		p, err := benchPorts.Take()
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// getJSON GETs url into v.
func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// mustJSON encodes v or panics (for values that always encode).
func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
