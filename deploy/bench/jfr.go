package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// The broker's CPU profile: a Java Flight Recorder recording of the
// broker's execution samples during a write scenario, taken with the
// jcmd of the broker's own JVM, and summarised from `jfr print --json`.
// JFR samples threads that run Java code only: the JIT compiler's and the
// garbage collector's threads are not in it (their CPU is in the CPU
// table, the JIT's as kafka-jit).

// captureBroker records the broker (pid) for secs seconds and summarises
// the recording as the profile of run. It returns nil, having logged why,
// when the broker cannot be recorded (no jcmd next to its java, say).
func (b *bench) captureBroker(ctx context.Context, run string, pid, secs int) *ProfileSummary {
	bin, err := javaBin(pid)
	if err != nil {
		b.logf("no JFR profile of the broker during %s: %v", run, err)
		return nil
	}
	dir := filepath.Join(b.cfg.OutDir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil
	}
	file, err := filepath.Abs(filepath.Join(dir, run+"-kafka.jfr"))
	if err != nil {
		return nil
	}
	name := "bench-" + run
	jcmd := func(args ...string) error {
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "jcmd"), append([]string{fmt.Sprint(pid)}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("jcmd %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	settings := filepath.Join(dir, "execution-samples.jfc")
	if err := os.WriteFile(settings, []byte(samplesOnly), 0o644); err != nil {
		return nil
	}
	defer os.Remove(settings)
	if err := jcmd("JFR.start", "name="+name, "settings="+settings); err != nil {
		b.logf("no JFR profile of the broker during %s: %v", run, err)
		return nil
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(secs) * time.Second):
	}
	if err := jcmd("JFR.stop", "name="+name, "filename="+file); err != nil {
		b.logf("no JFR profile of the broker during %s: %v", run, err)
		return nil
	}
	// The text form: --json repeats every frame's class loader and
	// module, some 3 KB a frame.
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "jfr"), "print", "--stack-depth", "256", "--events", "jdk.ExecutionSample", file)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil
	}
	if err := cmd.Start(); err != nil {
		b.logf("JFR profile %s: %v", file, err)
		return nil
	}
	samples, err := readSamples(out)
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		b.logf("JFR profile %s: %v", file, err)
		return nil
	}
	s := summarizeSamples(samples, 15)
	s.Run, s.Proc, s.Seconds = run, "kafka", secs
	s.File = file
	if rel, err := filepath.Rel(b.cfg.Repo, file); err == nil && !strings.HasPrefix(rel, "..") {
		s.File = rel
	}
	return s
}

// samplesOnly is a JFR configuration that records execution samples of
// Java threads every 10 ms, and nothing else (the settings that come with
// the JDK record dozens of other events, some ten times the bytes).
const samplesOnly = `<?xml version="1.0" encoding="UTF-8"?>
<configuration version="2.0" label="execution samples" description="deploy/bench: the broker's CPU profile">
  <event name="jdk.ExecutionSample">
    <setting name="enabled">true</setting>
    <setting name="period">10 ms</setting>
  </event>
</configuration>
`

// javaBin returns the directory of the java binary that runs pid, where
// its jcmd and jfr are.
func javaBin(pid int) (string, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return "", err
	}
	bin := filepath.Dir(exe)
	for _, tool := range []string{"jcmd", "jfr"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			return "", fmt.Errorf("the broker's JVM (%s) has no %s: %w", exe, tool, err)
		}
	}
	return bin, nil
}

// sample is one JFR execution sample: the thread, and its stack's frames
// as "class.method", innermost first.
type sample struct {
	thread string
	frames []string
}

// readSamples parses `jfr print --events jdk.ExecutionSample`: each
// event's sampledThread, and the frames of its stackTrace, cut at their
// argument list ("pkg.Class.method(args) line: N" becomes
// "pkg.Class.method"). A stack cut short by --stack-depth ends in "...".
func readSamples(r io.Reader) ([]sample, error) {
	var out []sample
	var cur *sample
	inStack := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "jdk.ExecutionSample {":
			out = append(out, sample{})
			cur, inStack = &out[len(out)-1], false
		case cur == nil:
		case strings.HasPrefix(line, "sampledThread = "):
			name := strings.TrimPrefix(line, "sampledThread = ")
			if unq, _, ok := strings.Cut(strings.TrimPrefix(name, `"`), `"`); ok && strings.HasPrefix(name, `"`) {
				name = unq
			}
			cur.thread = name
		case line == "stackTrace = [":
			inStack = true
		case inStack && line == "]":
			inStack = false
		case inStack && line != "...":
			frame, _, _ := strings.Cut(line, "(")
			cur.frames = append(cur.frames, frame)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading jfr print: %w", err)
	}
	return out, nil
}

// handlerFrame matches the frame of KafkaApis that handles one kind of
// request (handleProduceRequest, handleFetchRequest, ...), or a callback
// of one ($anonfun$handleFetchRequest$16, which sends a fetch's response).
var handlerFrame = regexp.MustCompile(`^kafka\.server\.KafkaApis\.(?:\$anonfun\$)?(handle[A-Za-z]+)`)

// trailingNumbers matches the numbers (and listener names) that tell
// threads of one pool apart.
var trailingNumbers = regexp.MustCompile(`(-\d+|-[A-Z_]+|-ListenerName\([^)]*\))+$`)

// summarizeSamples returns the profile's header, its n hottest methods
// (innermost frames) as Flat, and as Breakdown where the samples went:
// the kind of request a request handler thread was handling (its
// KafkaApis.handle* frame), and every other thread by its pool's name.
func summarizeSamples(samples []sample, n int) *ProfileSummary {
	total := len(samples)
	self, work := map[string]int{}, map[string]int{}
	for _, s := range samples {
		top := "(no frames)"
		if len(s.frames) > 0 {
			top = s.frames[0]
		}
		self[top]++
		w := "thread " + trailingNumbers.ReplaceAllString(s.thread, "")
		for i := len(s.frames) - 1; i >= 0; i-- { // the outermost handle* frame
			if m := handlerFrame.FindStringSubmatch(s.frames[i]); m != nil && m[1] != "handle" {
				w = "request " + strings.TrimPrefix(m[1], "handle")
				break
			}
		}
		work[w]++
	}
	table := func(counts map[string]int, limit int, head string) []string {
		type kv struct {
			k string
			v int
		}
		var rows []kv
		for k, v := range counts {
			rows = append(rows, kv{k, v})
		}
		sort.Slice(rows, func(i, j int) bool {
			if rows[i].v != rows[j].v {
				return rows[i].v > rows[j].v
			}
			return rows[i].k < rows[j].k
		})
		lines := []string{fmt.Sprintf("%8s %6s  %s", "samples", "share", head)}
		for i, r := range rows {
			if i == limit {
				break
			}
			lines = append(lines, fmt.Sprintf("%8d %5.1f%%  %s", r.v, 100*float64(r.v)/float64(max(total, 1)), r.k))
		}
		return lines
	}
	return &ProfileSummary{
		Header:    fmt.Sprintf("JFR: %d execution samples of Java threads (every 10 ms while running Java code; JIT and GC threads are not sampled)", total),
		Flat:      table(self, n, "innermost frame"),
		Breakdown: table(work, 2*n, "request handled (the KafkaApis.handle* frame), or else the thread's pool"),
	}
}
