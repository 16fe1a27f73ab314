package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The README's quick start is run as written, block by block, against the
// system `make run` starts (make build, then deploy/run.sh), here on ports
// and in a data directory of the test's own: every fenced sh block of its
// "Quick start" section (the seed's curl flow and make replay), and of
// "Secure mode in one command" against make run AUTH_MODE=jwt (all but
// the block that starts make run itself). Each block runs with bash
// -euo pipefail and must exit 0; the test checks the answers the README
// promises. So the README cannot drift from what the system does.

// readmeBlocks returns the fenced sh blocks of the README section whose
// heading is "## "+section.
func readmeBlocks(t *testing.T, section string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := shBlocks(string(raw), section)
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}

// shBlocks returns the ```sh blocks of the section "## "+section of a
// Markdown document, up to the next "## " heading.
func shBlocks(doc, section string) ([]string, error) {
	var (
		blocks []string
		in     bool // in the section
		block  *strings.Builder
		found  bool
	)
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case block != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, block.String())
			block = nil
		case block != nil:
			block.WriteString(line + "\n")
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == section
			found = found || in
		case in && strings.TrimSpace(line) == "```sh":
			block = &strings.Builder{}
		}
	}
	if !found {
		return nil, fmt.Errorf("README.md has no section %q", section)
	}
	if block != nil {
		return nil, fmt.Errorf("README.md: an unterminated code block in %q", section)
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("README.md: no sh block in %q", section)
	}
	return blocks, nil
}

// localPort matches the addresses of make run's ports in the README:
// the front door on 8080 and the instances on 8081-8099.
var localPort = regexp.MustCompile(`\b(localhost|127\.0\.0\.1):(80[89][0-9])\b`)

// atPortBase rewrites make run's ports in script to those of a run.sh
// started with PORT_BASE=base.
func atPortBase(script string, base int) string {
	return localPort.ReplaceAllStringFunc(script, func(m string) string {
		sub := localPort.FindStringSubmatch(m)
		p, _ := strconv.Atoi(sub[2])
		return fmt.Sprintf("%s:%d", sub[1], base+p-8080)
	})
}

func TestShBlocksAndPortRewrite(t *testing.T) {
	doc := "# x\n```sh\nnot this\n```\n## Quick start\ntext\n```sh\na 1\nb\n```\n```\nplain\n```\n```sh\nc\n```\n## Next\n```sh\nnot this either\n```\n"
	got, err := shBlocks(doc, "Quick start")
	if err != nil || len(got) != 2 || got[0] != "a 1\nb\n" || got[1] != "c\n" {
		t.Fatalf("shBlocks = %q, %v", got, err)
	}
	if _, err := shBlocks(doc, "Missing"); err == nil {
		t.Fatal("a missing section: no error")
	}
	if _, err := shBlocks("## A\n```sh\nx\n", "A"); err == nil {
		t.Fatal("an unterminated block: no error")
	}
	in := "curl http://localhost:8080/api/x http://localhost:8082/debug 127.0.0.1:8093 localhost:80800 localhost:9092"
	want := "curl http://localhost:31000/api/x http://localhost:31002/debug 127.0.0.1:31013 localhost:80800 localhost:9092"
	if got := atPortBase(in, 31000); got != want {
		t.Fatalf("atPortBase:\n got %s\nwant %s", got, want)
	}
}

// runSystem is a system started the way `make run` starts it.
type runSystem struct {
	t    *testing.T
	URL  string // the front door
	base int    // PORT_BASE
	data string // RUN_DATA
	env  []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var (
	makeBuildOnce sync.Once
	makeBin       string
	makeBuildErr  error
)

// makeBuild runs `make build` once per test binary, into a directory of
// its own (BIN), as `make run` does before it starts the services.
func makeBuild(t *testing.T) string {
	t.Helper()
	makeBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "profiles-e2e-make-bin-")
		if err != nil {
			makeBuildErr = err
			return
		}
		makeBin = dir
		cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+dir)
		cmd.Dir = repoRoot
		cmd.Env = cleanEnv(nil)
		if out, err := cmd.CombinedOutput(); err != nil {
			makeBuildErr = fmt.Errorf("make build: %v\n%s", err, out)
		}
	})
	if makeBuildErr != nil {
		t.Fatal(makeBuildErr)
	}
	return makeBin
}

// cleanEnv is the test's environment without the settings a user of make
// run would not have (the outer make's, and any service setting), plus
// extra.
func cleanEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "MAKEFLAGS", name == "MFLAGS", name == "MAKELEVEL", name == "MAKEOVERRIDES",
			name == "RUN_DATA", name == "BIN_DIR", name == "PORT_BASE", name == "INSTANCES", name == "DRY_RUN",
			strings.HasPrefix(name, "PII_KEK"), strings.HasPrefix(name, "AUTH_"), strings.HasPrefix(name, "INTERNAL_SECRET"),
			strings.HasPrefix(name, "KAFKA_"), strings.HasSuffix(name, "_TOPIC"), strings.HasSuffix(name, "_GROUP"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startMakeRun builds with make build and starts deploy/run.sh with two
// instances of each service on a port block and in a data directory of
// the test's own, on the test broker, with topics and groups of its own,
// and the given extra environment (AUTH_MODE=jwt). It waits until run.sh
// says the system is ready; the system is stopped, by run.sh's own
// SIGTERM handling, when the test ends.
func startMakeRun(t *testing.T, extra ...string) *runSystem {
	t.Helper()
	needKafka(t)
	bin := makeBuild(t)
	// Two instances: the front door on base, the instances on base+1..3
	// and base+11..13.
	base, err := testPorts.TakeBlock(14)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("e2e-makerun-%06d", rand.IntN(1e6))
	s := &runSystem{t: t, URL: fmt.Sprintf("http://127.0.0.1:%d", base), base: base, data: filepath.Join(t.TempDir(), "data"),
		out: &syncBuffer{}, done: make(chan struct{})}
	s.env = cleanEnv(append([]string{
		"KAFKA_BROKERS=" + brokers,
		"EVENTS_TOPIC=" + name + ".events", "SNAPSHOTS_TOPIC=" + name + ".snapshots",
		"EMAIL_INDEX_TOPIC=" + name + ".email-index", "EMAIL_CLAIMS_TOPIC=" + name + ".email-claims",
		"DEAD_LETTER_TOPIC=" + name + ".dead-letters", "CONTROL_TOPIC=" + name + ".control",
		"KEYS_TOPIC=" + name + ".profile-keys", "QUERY_GROUP=" + name + ".query",
		"COMMAND_GROUP=" + name + ".command", "PROJECTOR_GROUP=" + name + ".projector",
		"TOPIC_PARTITIONS=4", "SESSION_TIMEOUT=6s", "ROUTE_WAIT=30s",
		"RUN_DATA=" + s.data, "PORT_BASE=" + strconv.Itoa(base), "INSTANCES=2",
		// make replay and make token, in the blocks, use the binaries of
		// this make build.
		"MAKEFLAGS=BIN=" + bin,
	}, extra...))
	s.cmd = exec.Command(filepath.Join(repoRoot, "deploy", "run.sh"))
	s.cmd.Dir = repoRoot
	s.cmd.Env = append(s.env, "BIN_DIR="+bin)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Its own process group, so that whatever run.sh leaves behind can be
	// killed; and killed with the test process.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)

	deadline := time.After(4 * time.Minute) // a shared 2-core machine
	for !strings.Contains(s.out.String(), "ready: the API is on") {
		select {
		case <-s.done:
			t.Fatalf("deploy/run.sh exited before the system was ready:\n%s%s", s.out.String(), s.logTails())
		case <-deadline:
			t.Fatalf("deploy/run.sh: not ready after 4 minutes:\n%s%s", s.out.String(), s.logTails())
		case <-time.After(200 * time.Millisecond):
		}
		if strings.Contains(s.out.String(), "not ready after") {
			t.Fatalf("deploy/run.sh: the system did not become ready:\n%s%s", s.out.String(), s.logTails())
		}
	}
	t.Logf("deploy/run.sh:\n%s", s.out.String())
	return s
}

// stop stops run.sh as Ctrl-C does (it stops the services by PID), then
// kills its process group if anything is left.
func (s *runSystem) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(90 * time.Second):
		s.t.Errorf("deploy/run.sh did not stop within 90 s of SIGTERM:\n%s", s.out.String())
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) // the group: any service left behind
	if s.t.Failed() {
		s.t.Logf("deploy/run.sh:\n%s%s", s.out.String(), s.logTails())
	}
}

// logTails returns the last lines of every service's log.
func (s *runSystem) logTails() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(s.data, "logs", "*.log"))
	for _, l := range logs {
		raw, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
		fmt.Fprintf(&b, "\n--- %s (last lines)\n%s\n", filepath.Base(l), strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

// bash runs script, its make run ports rewritten to the system's, with
// bash -euo pipefail from the repository root (as a reader of the README
// runs it), and returns its standard output; the test fails unless it
// exits 0.
func (s *runSystem) bash(script string) string {
	s.t.Helper()
	script = atPortBase(script, s.base)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = repoRoot
	cmd.Env = s.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	s.t.Logf("$ %s\n%s\n(stderr)\n%s", strings.TrimSpace(script), stdout.String(), stderr.String())
	if err != nil {
		s.t.Fatalf("the README block exited with %v:\n%s\nstdout:\n%s\nstderr:\n%s", err, script, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// get sends a GET through the front door with an optional bearer token.
func (s *runSystem) get(path, token string) (int, string, http.Header) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: the output lacks %q:\n%s", what, w, out)
		}
	}
}

var uidInOutput = regexp.MustCompile(`"uid":"([0-9a-f-]{36})"`)

func TestReadmeQuickStartRunsAsWritten(t *testing.T) {
	blocks := readmeBlocks(t, "Quick start")
	s := startMakeRun(t)
	var curlFlow, replay bool
	for _, b := range blocks {
		out := s.bash(b)
		switch {
		case strings.Contains(b, "/api/profile"):
			curlFlow = true
			// What the README's comments say each command answers.
			mustContain(t, "the curl flow", out,
				`"username":"bob"`, `"email":"bob1@mail.com","version":1`, // POST, GET, search
				`"email":"bob2@mail.com","version":2`, // PUT, search
				`"members"`,                           // /debug/assignment
			)
			if !regexp.MustCompile(`(?mi)^x-served-by: query-svc-[01]\s*$`).MatchString(out) ||
				!regexp.MustCompile(`(?mi)^x-profiles-hops: [01]\s*$`).MatchString(out) {
				t.Errorf("the curl flow: no X-Served-By and X-Profiles-Hops headers:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; last != "404" {
				t.Errorf("the curl flow ends with %q, want 404 (the GET after the DELETE)", last)
			}
			m := uidInOutput.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("the curl flow printed no uid:\n%s", out)
			}
			// The profile is gone, and so is its email, through the API.
			if code, body, _ := s.get("/api/profile/"+m[1], ""); code != http.StatusNotFound {
				t.Errorf("GET the deleted profile = %d %s", code, body)
			}
			if code, body, _ := s.get("/api/search?email=bob2@mail.com", ""); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
				t.Errorf("search for the deleted profile's email = %d %s", code, body)
			}
		case strings.Contains(b, "make replay"):
			replay = true
			mustContain(t, "make replay", out,
				"current generation: 1 (",                  // make replay: status
				"replay: generation 2 built:",              // snapshots -switch
				"(100% of the log's",                       // its progress ends at 100%
				"other", "offsets are transaction markers", // and says why events < offsets
				`"current": 2`, // status -json after the switch
			)
		}
	}
	if !curlFlow || !replay {
		t.Fatalf("the quick start lost its curl flow (%v) or make replay (%v)", curlFlow, replay)
	}
}

func TestReadmeSecureModeRunsAsWritten(t *testing.T) {
	blocks := readmeBlocks(t, "Secure mode in one command")
	var started bool
	var rest []string
	for _, b := range blocks {
		if strings.Contains(b, "make run AUTH_MODE=jwt") {
			started = true // started below, as make run AUTH_MODE=jwt does
			continue
		}
		rest = append(rest, b)
	}
	if !started || len(rest) == 0 {
		t.Fatalf("the README's secure mode lost make run AUTH_MODE=jwt (%v) or its token commands (%d blocks)", started, len(rest))
	}
	s := startMakeRun(t, "AUTH_MODE=jwt")
	mustContain(t, "deploy/run.sh", s.out.String(), "make -s token")

	for _, b := range rest {
		out := s.bash(b)
		if strings.Contains(b, "make -s token") {
			mustContain(t, "the token flow", out, `"username":"ann"`)
			if !regexp.MustCompile(`(?m)^401$`).MatchString(out) {
				t.Errorf("the token flow: the GET without a token did not answer 401:\n%s", out)
			}
		}
	}

	// make token's token is accepted, for its own profile; without a token,
	// or with one of another key, the answer is 401.
	sub := uuid.NewString()
	token := strings.TrimSpace(s.bash("make -s token SUB=" + sub + ` SCOPES="profiles:read profiles:write"`))
	if strings.Count(token, ".") != 2 {
		t.Fatalf("make token printed %q, not one JWT", token)
	}
	post := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST",
		"-H", "Authorization: Bearer "+token, "-H", "Content-Type: application/json",
		"-d", `{"username":"tok","email":"tok-`+sub[:8]+`@mail.com"}`, s.URL+"/api/profile")
	if code, err := post.Output(); err != nil || string(code) != "201" {
		t.Fatalf("POST with make token's token = %s, %v; want 201", code, err)
	}
	if code, body, _ := s.get("/api/profile/"+sub, token); code != http.StatusOK || !strings.Contains(body, `"uid":"`+sub+`"`) {
		t.Fatalf("GET with the token = %d %s", code, body)
	}
	code, _, h := s.get("/api/profile/"+sub, "")
	if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("GET without a token = %d (WWW-Authenticate %q), want 401", code, h.Get("WWW-Authenticate"))
	}
	other := filepath.Join(t.TempDir(), "other-dev-auth")
	devtoken := filepath.Join(makeBin, "devtoken")
	if out, err := exec.Command(devtoken, "init", "-dir", other).CombinedOutput(); err != nil {
		t.Fatalf("devtoken init: %v\n%s", err, out)
	}
	raw, err := exec.Command(devtoken, "token", "-dir", other, "-sub", sub).Output()
	if err != nil {
		t.Fatalf("devtoken token: %v", err)
	}
	foreign := strings.TrimSpace(string(raw))
	if code, _, _ := s.get("/api/profile/"+sub, foreign); code != http.StatusUnauthorized {
		t.Fatalf("GET with a token of another key = %d, want 401", code)
	}
}
