// Package e2e tests the whole system the way a client uses it: every service
// runs as its own process, built from this workspace, against a real Kafka
// broker, and the tests talk to the front door over HTTP. Every response is
// checked against the OpenAPI document.
//
// The broker is the one deploy/test.sh starts (`make test`): its address is
// in PROFILES_TEST_KAFKA and its data directory in PROFILES_TEST_KAFKA_DATA.
// Without it the tests skip, loudly; with PROFILES_REQUIRE_KAFKA=1 (as
// `make test` sets) they fail instead.
package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/deploy/internal/portalloc"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/testenv"
	"profiles/platform/topology"
)

var (
	brokers    = os.Getenv("PROFILES_TEST_KAFKA")
	kafkaData  = os.Getenv("PROFILES_TEST_KAFKA_DATA")
	binDir     string // where TestMain built the binaries
	repoRoot   string
	buildError error
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if addr := os.Getenv(cutClientEnv); addr != "" {
		os.Exit(cutClient(addr))
	}
	code := func() int {
		if brokers == "" {
			return m.Run() // every test skips or fails in needKafka
		}
		dir, err := os.MkdirTemp("", "profiles-e2e-bin-")
		if err != nil {
			buildError = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		binDir = dir
		buildError = buildAll(dir)
		code := m.Run()
		if err := writeReliabilityReport(); err != nil {
			fmt.Fprintln(os.Stderr, "reliability report:", err)
			code = 1
		}
		return code
	}()
	removeCgroups()
	os.Exit(code)
}

// buildAll builds every binary of the system into dir.
func buildAll(dir string) error {
	for _, b := range []struct{ module, pkg, name string }{
		{"command-svc", "./cmd/command-svc", "command-svc"},
		{"query-svc", "./cmd/query-svc", "query-svc"},
		{"projections", "./cmd/projector", "projector"},
		{"projections", "./cmd/replay", "replay"},
		{"projections", "./cmd/replicator", "replicator"},
		{"deploy", "./cmd/frontdoor", "frontdoor"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Dir = filepath.Join(repoRoot, b.module)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build and deploy/Dockerfile build them
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b.name, err, out)
		}
	}
	return nil
}

// needKafka skips (loudly) or fails the test when there is no broker.
func needKafka(t *testing.T) {
	t.Helper()
	if brokers == "" {
		testenv.Missing(t, "PROFILES_TEST_KAFKA is not set (the test Kafka broker); run `make test`")
	}
	if buildError != nil {
		t.Fatal(buildError)
	}
	conn, err := net.DialTimeout("tcp", strings.Split(brokers, ",")[0], 3*time.Second)
	if err != nil {
		t.Fatalf("Kafka at %s is unreachable: %v", brokers, err)
	}
	conn.Close()
}

// System is one running copy of the whole system, with topics and consumer
// groups of its own so that tests never see each other's data.
type System struct {
	t       *testing.T
	dir     string
	name    string
	URL     string // the front door
	env     map[string]string
	order   []string // instance names in start order
	kinds   map[string]string
	extra   map[string]map[string]string // per-instance environment
	kindEnv map[string]map[string]string // per-kind environment (Options.KindEnv)
	procs   map[string]*proc
	ports   map[string]int
	gids    map[string]uint32 // each instance's group id (see netcut_test.go)
	spec    *apiSpec
	HTTP    *http.Client
	// Brokers are the bootstrap servers the services use.
	Brokers string

	secretsMu sync.Mutex
	secrets   map[string]bool // personal data and tokens sent; see checkLogs
}

type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Options change a System's configuration.
type Options struct {
	// Env is added to every service's environment.
	Env map[string]string
	// KindEnv is added to the environment of every instance of a kind
	// ("command-svc", "query-svc", "projector", "frontdoor"), and of the
	// replay CLI ("replay", see System.Replay), after Env.
	KindEnv map[string]map[string]string
	// KafkaSecurity is how the test process itself reaches the brokers
	// (its keyring of the system's data keys); the zero value is PLAINTEXT.
	KafkaSecurity kafkax.Security
	// Instances of each service; 0 means 1.
	Query, Command, Projector int
	// Partitions of every topic; 0 means 4.
	Partitions int
	// Brokers overrides the bootstrap servers (comma-separated); empty
	// means the single test broker (PROFILES_TEST_KAFKA). The fault suite
	// passes the three-node cluster here.
	Brokers string
}

// StartSystem starts every instance and waits until all are ready. The
// system is stopped when the test ends; on failure its logs are printed.
// Instances are named <service>-<i>, e.g. query-svc-0, and the front door
// is "frontdoor".
func StartSystem(t *testing.T, opts Options) *System {
	t.Helper()
	needKafka(t)
	recordDuration(t)
	name := fmt.Sprintf("e2e-%s-%06d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), rand.IntN(1e6))
	s := &System{
		t: t, dir: t.TempDir(), name: name,
		kinds: map[string]string{}, extra: map[string]map[string]string{}, procs: map[string]*proc{}, ports: map[string]int{}, gids: map[string]uint32{},
		spec: loadSpec(t), HTTP: &http.Client{Timeout: 60 * time.Second},
	}
	s.Brokers = brokers
	if opts.Brokers != "" {
		s.Brokers = opts.Brokers
	}
	partitions := 4
	if opts.Partitions > 0 {
		partitions = opts.Partitions
	}
	for _, k := range []struct {
		kind string
		n    int
	}{{"query-svc", opts.Query}, {"projector", opts.Projector}, {"command-svc", opts.Command}} {
		for i := range max(k.n, 1) {
			s.add(k.kind, fmt.Sprintf("%s-%d", k.kind, i))
		}
	}
	s.add("frontdoor", "frontdoor")
	s.URL = s.URLOf("frontdoor")
	s.env = map[string]string{
		"KAFKA_BROKERS":      s.Brokers,
		"EVENTS_TOPIC":       name + ".events",
		"SNAPSHOTS_TOPIC":    name + ".snapshots",
		"EMAIL_INDEX_TOPIC":  name + ".email-index",
		"EMAIL_CLAIMS_TOPIC": name + ".email-claims",
		"DEAD_LETTER_TOPIC":  name + ".dead-letters",
		"CONTROL_TOPIC":      name + ".control",
		"KEYS_TOPIC":         name + ".profile-keys",
		"QUERY_GROUP":        name + ".query",
		"COMMAND_GROUP":      name + ".command",
		"TOPIC_PARTITIONS":   fmt.Sprint(partitions),
		"PROJECTOR_GROUP":    name + ".projector",
		"SESSION_TIMEOUT":    "6s",
		// A failover (session timeout, rebalance, catch-up) takes up to
		// about 15 s here; requests wait for it rather than fail.
		"ROUTE_WAIT": "30s",
		// A graceful stop drains at once (no time for load balancers,
		// which the tests do not have): it leaves its groups and stops.
		// The roll test (drain_test.go) sets its own.
		"DRAIN_GRACE":    "0s",
		"DRAIN_HANDOVER": "0s",
		"LOG_FORMAT":     "json",
		// PROFILES_E2E_LOG_LEVEL=debug adds sarama's own lines (joins,
		// rebalances, retries) to the services' logs.
		"LOG_LEVEL":   cmp.Or(os.Getenv("PROFILES_E2E_LOG_LEVEL"), "info"),
		"COMMAND_URL": strings.Join(s.urlsOf("command-svc"), ","),
		"QUERY_URL":   strings.Join(s.urlsOf("query-svc"), ","),
		// No authentication and no rate limit, unless a test asks for them
		// in Options.Env (auth_test.go does): the other tests are about
		// everything else.
		"AUTH_MODE":      "off",
		"RATE_LIMIT_RPS": "0",
		// A key-encryption key of personal data of the system's own,
		// shared by all its instances and runs of the replay CLI.
		"PII_KEK": newKEK(t),
	}
	for k, v := range opts.Env {
		s.env[k] = v
	}
	s.kindEnv = opts.KindEnv
	if clusterBrokers != "" && s.Brokers == clusterBrokers {
		// Registered first, so it runs after the cleanup below has
		// stopped every instance.
		t.Cleanup(s.deleteTopics)
	}
	t.Cleanup(func() {
		s.StopAll()
		s.checkLogs()
		if t.Failed() || os.Getenv("PROFILES_E2E_LOGS") == "1" {
			s.dumpLogs()
		}
	})
	s.StartAll()
	s.followKeys(partitions, opts.KafkaSecurity)
	return s
}

// deleteTopics deletes the system's topics (every topic named after it,
// the replay's generations too), once its instances have stopped. The
// three-node cluster serves the whole fault suite, and later scenarios
// kill and restart its brokers: a broker that starts recovers every
// partition it holds before it serves, so topics left by the scenarios
// before would make a scenario's recovery time depend on the order in
// which the suite runs. Failures are logged, not fatal: the cluster is
// thrown away with the run.
func (s *System) deleteTopics() {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	cfg.Net.DialTimeout = 5 * time.Second
	cfg.Admin.Timeout = 10 * time.Second
	admin, err := sarama.NewClusterAdmin(strings.Split(s.Brokers, ","), cfg)
	if err != nil {
		s.t.Logf("the topics of %s are left: %v", s.name, err)
		return
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		s.t.Logf("the topics of %s are left: %v", s.name, err)
		return
	}
	deleted := 0
	for topic := range topics {
		if !strings.HasPrefix(topic, s.name+".") {
			continue
		}
		if err := admin.DeleteTopic(topic); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			s.t.Logf("topic %s is left: %v", topic, err)
			continue
		}
		deleted++
	}
	s.t.Logf("deleted the %d topics of %s", deleted, s.name)
}

// testKeys are the pii.Keys of the test process: the keyrings of the
// systems that run, so that tests can decode the sealed events and
// snapshots they read from Kafka themselves (with codecOfTests).
type testKeys struct {
	mu    sync.Mutex
	rings map[*System]*pii.Keyring
}

var keysOfTests = &testKeys{rings: map[*System]*pii.Keyring{}}

// codecOfTests opens what the tests read from Kafka with keysOfTests. Its
// KEK keys no email: System.EmailKey keys the emails of a system.
var codecOfTests = func() *pii.Codec {
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		panic(err)
	}
	return pii.NewCodec(kek, keysOfTests)
}()

func (k *testKeys) all() []*pii.Keyring {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*pii.Keyring, 0, len(k.rings))
	for _, r := range k.rings {
		out = append(out, r)
	}
	return out
}

// DataKey asks every system's keyring at once; the keyrings of the other
// systems never find uid (they wait up to their MissWait), so the first
// key or tombstone found answers. A key that cannot be read yet (a
// keyring's read failed on a broker that a fault scenario killed, or the
// keyring stopped and followKeys is replacing it) is asked for again for
// up to 10 s, as the services' readers retry, before the error is
// returned.
func (k *testKeys) DataKey(uid string) (*pii.DataKey, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		dk, err := k.dataKeyOnce(uid)
		if !errors.Is(err, pii.ErrKeyUnavailable) || time.Now().After(deadline) {
			return dk, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (k *testKeys) dataKeyOnce(uid string) (*pii.DataKey, error) {
	rings := k.all()
	for _, r := range rings {
		if dk, ok := r.Known(uid); ok && dk != nil {
			return dk, nil
		}
	}
	type answer struct {
		dk  *pii.DataKey
		err error
	}
	answers := make(chan answer, len(rings))
	for _, r := range rings {
		go func() {
			dk, err := r.DataKey(uid)
			answers <- answer{dk, err}
		}()
	}
	err := error(pii.ErrKeyUnavailable)
	for range rings {
		a := <-answers
		if a.err == nil || errors.Is(a.err, pii.ErrNoKey) {
			return a.dk, a.err // uids are unique: one system's tombstone is final
		}
		err = a.err
	}
	return nil, err
}

func (k *testKeys) Forget(uid string) {
	for _, r := range k.all() {
		r.Forget(uid)
	}
}

// followKeys starts the test process's keyring of the system (see testKeys).
func (s *System) followKeys(partitions int, security kafkax.Security) {
	kek, err := pii.ParseKEK(s.env["PII_KEK"])
	if err != nil {
		s.t.Fatal(err)
	}
	newRing := func() (*pii.Keyring, error) {
		return pii.NewKeyring(topology.Config{Config: kafkax.Config{Brokers: strings.Split(s.Brokers, ","), Security: security}, KeysTopic: s.env["KEYS_TOPIC"], Partitions: int32(partitions)},
			"e2e-test", kek, slog.New(slog.DiscardHandler))
	}
	ring, err := newRing()
	if err != nil {
		s.t.Fatal(err)
	}
	keysOfTests.mu.Lock()
	keysOfTests.rings[s] = ring
	keysOfTests.mu.Unlock()
	// A keyring stops for good when its first read of a partition fails
	// (a broker that a fault scenario kills as the system starts): the
	// test process then follows the keys with a new one, as a service
	// would be restarted.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			err := ring.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			next, nerr := newRing()
			if nerr != nil {
				s.t.Errorf("the test keyring stopped (%v) and cannot start again: %v", err, nerr)
				return
			}
			s.t.Logf("the test keyring stopped (%v); following the keys with a new one", err)
			keysOfTests.mu.Lock()
			keysOfTests.rings[s] = next
			keysOfTests.mu.Unlock()
			ring.Close()
			ring = next
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	s.t.Cleanup(func() {
		keysOfTests.mu.Lock()
		delete(keysOfTests.rings, s)
		keysOfTests.mu.Unlock()
		cancel()
		<-done
		ring.Close()
	})
}

// add registers an instance (without starting it) and gives it a port.
func (s *System) add(kind, name string) {
	s.order = append(s.order, name)
	s.kinds[name] = kind
	s.ports[name] = freePort(s.t)
}

// AddInstance registers and starts one more instance of kind, and returns
// its name. It is not added to the front door's or command-svc's lists.
func (s *System) AddInstance(kind string) string {
	s.t.Helper()
	n := 0
	for _, k := range s.kinds {
		if k == kind {
			n++
		}
	}
	name := fmt.Sprintf("%s-%d", kind, n)
	s.add(kind, name)
	s.Start(name)
	return name
}

// URLOf returns the base URL of an instance.
func (s *System) URLOf(name string) string { return fmt.Sprintf("http://127.0.0.1:%d", s.ports[name]) }

// Instances returns the names of the instances of kind, in order.
func (s *System) Instances(kind string) []string {
	var out []string
	for _, n := range s.order {
		if s.kinds[n] == kind {
			out = append(out, n)
		}
	}
	return out
}

func (s *System) urlsOf(kind string) []string {
	var out []string
	for _, n := range s.Instances(kind) {
		out = append(out, s.URLOf(n))
	}
	return out
}

// DataDir returns the Pebble directory of an instance (DATA_DIR: the
// view of a query-svc, the state of a command-svc).
func (s *System) DataDir(name string) string { return filepath.Join(s.dir, name+"-data") }

// StartAll starts every instance that is not running and waits for readiness.
func (s *System) StartAll() {
	s.t.Helper()
	for _, name := range s.order {
		if s.procs[name] == nil {
			s.Start(name)
		}
	}
	s.WaitReady(s.order...)
}

// SetEnv sets an environment variable of one instance, from its next start.
func (s *System) SetEnv(name, key, value string) {
	if s.extra[name] == nil {
		s.extra[name] = map[string]string{}
	}
	s.extra[name][key] = value
}

// Exited reports whether an instance's process has ended by itself.
func (s *System) Exited(name string) bool {
	select {
	case <-s.procs[name].done:
		return true
	default:
		return false
	}
}

// Start starts one instance (without waiting for readiness).
func (s *System) Start(name string) {
	s.t.Helper()
	logPath := filepath.Join(s.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, s.kinds[name]))
	cmd.Env = os.Environ()
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range s.kindEnv[s.kinds[name]] {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range s.extra[name] {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env,
		fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", s.ports[name]),
		"ADVERTISE_URL="+s.URLOf(name),
		"INSTANCE_ID="+name,
		"DATA_DIR="+s.DataDir(name),
	)
	cmd.Stdout, cmd.Stderr = f, f
	if s.gids[name] == 0 {
		s.gids[name] = newGID()
	}
	dieWithTest(cmd, s.gids[name])
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	s.procs[name] = p
}

// Stop stops one instance gracefully (SIGTERM, then SIGKILL after 30s).
func (s *System) Stop(name string) {
	p := s.procs[name]
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		s.t.Errorf("%s did not stop within 30s of SIGTERM; killing it", name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	delete(s.procs, name)
}

// Pause stops an instance with SIGSTOP (a long GC pause, a frozen VM);
// Resume continues it.
func (s *System) Pause(name string) {
	proc := s.procs[name].cmd.Process
	_ = proc.Signal(syscall.SIGSTOP)
	waitStopped(proc.Pid)
}

func (s *System) Resume(name string) { _ = s.procs[name].cmd.Process.Signal(syscall.SIGCONT) }

// waitStopped waits, at most a second, until every thread of process pid
// is stopped. SIGSTOP is delivered to each thread on its own: until then
// the process can still accept a connection and start reading it, and the
// read's deadline, set before the stop, has passed when it continues, so
// the server closes the connection with the request unread and the
// client sees it reset.
func waitStopped(pid int) {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return
		}
		stopped := true
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			// The state follows the command name, which is in parentheses.
			if i := bytes.LastIndexByte(b, ')'); err == nil && i >= 0 && i+2 < len(b) && b[i+2] != 'T' && b[i+2] != 't' {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
	}
}

// Kill stops one instance at once with SIGKILL, as a crash would.
func (s *System) Kill(name string) {
	p := s.procs[name]
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	delete(s.procs, name)
}

// StopAll stops every instance, the front door first.
func (s *System) StopAll() {
	for i := len(s.order) - 1; i >= 0; i-- {
		s.Stop(s.order[i])
	}
}

// WaitReady waits until each named instance answers /readyz with 200.
func (s *System) WaitReady(names ...string) {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range names {
		url := s.URLOf(name) + "/readyz"
		for {
			resp, err := http.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-s.procs[name].done:
				s.t.Fatalf("%s exited before it was ready", name)
			default:
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("%s not ready after 2 minutes (last: %v)", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Metric returns the value of a metric of one service; name may carry
// labels as the exposition format writes them, e.g. x{result="ok"}.
func (s *System) Metric(svc, name string) float64 {
	s.t.Helper()
	v, ok := s.metric(svc, name)
	if !ok {
		s.t.Fatalf("metric %s not exposed by %s", name, svc)
	}
	return v
}

// MetricOr is Metric with a default for a metric not exposed (yet).
func (s *System) MetricOr(svc, name string, def float64) float64 {
	s.t.Helper()
	if v, ok := s.metric(svc, name); ok {
		return v
	}
	return def
}

func (s *System) metric(svc, name string) (float64, bool) {
	s.t.Helper()
	resp, err := http.Get(s.URLOf(svc) + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v float64
		if strings.HasPrefix(sc.Text(), name+" ") {
			if _, err := fmt.Sscan(strings.TrimPrefix(sc.Text(), name+" "), &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

func (s *System) dumpLogs() {
	for _, svc := range s.order {
		b, err := os.ReadFile(filepath.Join(s.dir, svc+".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 40 && os.Getenv("PROFILES_E2E_LOGS") != "1" {
			lines = lines[len(lines)-40:]
		}
		s.t.Logf("---- last lines of %s ----\n%s", svc, strings.Join(lines, "\n"))
	}
}

// remember registers the personal data (email, username, displayName) of a
// JSON request body and the bearer token of a request, which no service
// may ever log (see checkLogs). Usernames shorter than 8 characters are
// left out: they would match ordinary words of the logs.
func (s *System) remember(body []byte, header map[string]string) {
	var fields map[string]any
	_ = json.Unmarshal(body, &fields)
	var add []string
	for k, v := range fields {
		str, ok := v.(string)
		if !ok {
			continue
		}
		switch k {
		case "email":
			if strings.Contains(str, "@") && len(strings.TrimSpace(str)) >= 5 {
				add = append(add, strings.TrimSpace(str), strings.ToLower(strings.TrimSpace(str)))
			}
		case "username", "displayName":
			if len(strings.TrimSpace(str)) >= 8 {
				add = append(add, strings.TrimSpace(str))
			}
		}
	}
	for k, v := range header {
		if strings.EqualFold(k, "Authorization") {
			if tok, ok := strings.CutPrefix(v, "Bearer "); ok && len(tok) >= 16 {
				add = append(add, tok)
			}
		}
	}
	if len(add) == 0 {
		return
	}
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	if s.secrets == nil {
		s.secrets = map[string]bool{}
	}
	for _, a := range add {
		s.secrets[a] = true
	}
}

// checkLogs fails the test if any service's log holds personal data or a
// token that the test sent (see remember): logs are kept, shipped and read
// by more people than the data, and a deleted profile's data must be gone.
func (s *System) checkLogs() {
	s.secretsMu.Lock()
	secrets := make([]string, 0, len(s.secrets))
	for k := range s.secrets {
		secrets = append(secrets, k)
	}
	s.secretsMu.Unlock()
	if len(secrets) == 0 {
		return
	}
	leaks, files := findInLogs(s.dir, secrets)
	for _, l := range leaks {
		s.t.Errorf("personal data or a token the test sent is in a service log: %s", l)
	}
	s.t.Logf("checked %d service logs for %d emails, usernames and tokens the test sent: %d found", files, len(secrets), len(leaks))
}

// findInLogs returns every line of the *.log files in dir that holds one
// of the secrets, as "file:line holds "secret": line", and how many files
// it read.
func findInLogs(dir string, secrets []string) (leaks []string, files int) {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range paths {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		files++
		for i, line := range strings.Split(string(b), "\n") {
			for _, sec := range secrets {
				if strings.Contains(line, sec) {
					leaks = append(leaks, fmt.Sprintf("%s:%d holds %q: %s", filepath.Base(f), i+1, sec, line))
				}
			}
		}
	}
	return leaks, files
}

// Response is an HTTP response with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r Response) JSON(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %q: %v", r.Body, err)
	}
}

// Do sends a request to the front door and checks the response against the
// OpenAPI document. body is JSON-encoded unless it is a string or []byte.
func (s *System) Do(method, path string, body any, header map[string]string) Response {
	s.t.Helper()
	return s.DoAt("frontdoor", method, path, body, header)
}

// DoAt is Do against one instance instead of the front door.
func (s *System) DoAt(name, method, path string, body any, header map[string]string) Response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	if rd != nil {
		b, _ := io.ReadAll(rd)
		s.remember(b, header)
		rd = bytes.NewReader(b)
	} else {
		s.remember(nil, header)
	}
	req, err := http.NewRequest(method, s.URLOf(name)+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	s.spec.check(s.t, req, r)
	return r
}

// Kafka returns a sarama client of the test broker, closed with the test.
func Kafka(t *testing.T) sarama.Client {
	t.Helper()
	return KafkaAt(t, brokers, false)
}

// KafkaReadCommitted is Kafka with read_committed isolation, so that
// aborted transactions are never read.
func KafkaReadCommitted(t *testing.T) sarama.Client {
	t.Helper()
	return KafkaAt(t, brokers, true)
}

// KafkaAt returns a sarama client of the given bootstrap servers
// (comma-separated), closed with the test.
func KafkaAt(t *testing.T, addrs string, readCommitted bool) sarama.Client {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	if readCommitted {
		cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	c, err := sarama.NewClient(strings.Split(addrs, ","), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// PartitionsOf refreshes the metadata of topic and returns its partitions.
func PartitionsOf(t *testing.T, c sarama.Client, topic string) []int32 {
	t.Helper()
	if err := c.RefreshMetadata(topic); err != nil {
		t.Fatal(err)
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

// EndOffsets returns the sum of the high-water marks of topic's partitions:
// the number of records ever written to it.
func EndOffsets(t *testing.T, c sarama.Client, topic string) int64 {
	t.Helper()
	var sum int64
	for _, p := range PartitionsOf(t, c, topic) {
		off, err := c.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		sum += off
	}
	return sum
}

// ReadToEnd reports whether a reader of partition p of topic whose next
// offset is next has read everything below the partition's end now: only
// transaction markers (or records of aborted transactions) lie between
// them. The end counts the markers, which are never delivered, so a
// reader of a transactional topic (the projector writes the snapshots and
// the email index in transactions) stops a marker short of it.
func ReadToEnd(t *testing.T, c sarama.Client, topic string, p int32, next int64) bool {
	t.Helper()
	end, err := c.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	drained, err := kafkax.Drained(c, topic, p, next, end)
	if err != nil {
		t.Logf("partition %d of %s: %v", p, topic, err)
	}
	return err == nil && drained
}

// CountRecords reads topic from its oldest to its newest offset and returns
// how many records it holds now (after compaction, say).
func CountRecords(t *testing.T, c sarama.Client, topic string) int {
	t.Helper()
	return len(ReadTopic(t, c, topic, nil))
}

// ReadTopic returns the records of the given partitions of topic (all of
// them if parts is nil), from the oldest to the end each had when read.
// Transaction markers count in the end but are never delivered, so a
// partition also counts as read when nothing more comes for a second.
func ReadTopic(t *testing.T, c sarama.Client, topic string, parts []int32) []*sarama.ConsumerMessage {
	t.Helper()
	if parts == nil {
		parts = PartitionsOf(t, c, topic)
	}
	from := make(map[int32]int64, len(parts))
	for _, p := range parts {
		from[p] = sarama.OffsetOldest
	}
	out, _ := ReadTopicFrom(t, c, topic, from)
	return out
}

// ReadTopicFrom is ReadTopic from the offset from gives each partition
// (sarama.OffsetOldest or OffsetNewest, or an offset), of the partitions
// from names. It also returns, for each partition, the offset to read from
// next time so that no record is read twice and none is skipped: the end
// when the partition was read to it, else the offset after the last record
// delivered (a transaction still open holds a read-committed consumer
// back, and its records may come later).
func ReadTopicFrom(t *testing.T, c sarama.Client, topic string, from map[int32]int64) ([]*sarama.ConsumerMessage, map[int32]int64) {
	t.Helper()
	consumer, err := sarama.NewConsumerFromClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var out []*sarama.ConsumerMessage
	next := make(map[int32]int64, len(from))
	for p, at := range from {
		end, err := c.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		start, err := c.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case at == sarama.OffsetNewest:
			at = end
		case at == sarama.OffsetOldest || at < start:
			at = start
		}
		next[p] = at
		if at >= end {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, at)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
	read:
		for {
			select {
			case m := <-pc.Messages():
				out = append(out, m)
				next[p] = m.Offset + 1
				if m.Offset >= end-1 {
					break read
				}
			case <-time.After(time.Second):
				break read
			case <-deadline:
				t.Fatalf("reading %s/%d timed out", topic, p)
			}
		}
		pc.Close()
	}
	return out, next
}

// racing runs f(0..n-1) at once and counts the statuses they return.
func racing(n int, f func(i int) int) map[int]int {
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = f(i)
		}()
	}
	wg.Wait()
	count := map[int]int{}
	for _, st := range statuses {
		count[st]++
	}
	return count
}

// kafkaScript runs deploy/kafka.sh with args against the test broker.
func kafkaScript(t *testing.T, args ...string) {
	t.Helper()
	if kafkaData == "" {
		t.Fatal("PROFILES_TEST_KAFKA_DATA is not set; run `make test`")
	}
	cmd := exec.Command(filepath.Join(repoRoot, "deploy", "kafka.sh"), append(args, "--data", kafkaData)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kafka.sh %v: %v\n%s", args, err, out)
	}
}

// testPorts hands out the ports of the processes this package starts. The
// block is below the ephemeral range and disjoint from the benchmark's
// (deploy/bench), whose test runs at the same time in another process.
// PROFILES_TEST_PORTS=lo-hi moves it, for runs that share a machine.
var testPorts = portalloc.FromEnv("PROFILES_TEST_PORTS", 21000, 27000)

// freePort returns a port that no other process of this test binary got,
// free now, and kept for this test's services across their restarts.
func freePort(t *testing.T) int {
	t.Helper()
	p, err := testPorts.Take()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// EmailKey returns what the system keys an email by in the claims topic
// and the email index, and places it by: the HMAC of the normalized email
// under the system's PII_KEK.
func (s *System) EmailKey(email string) string {
	kek, err := pii.ParseKEK(s.env["PII_KEK"])
	if err != nil {
		s.t.Fatal(err)
	}
	return pii.NewCodec(kek, nil).EmailKey(email)
}

// newKEK returns a fresh PII_KEK.
func newKEK(t *testing.T) string {
	k, err := pii.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recordDuration appends, when t ends, its name, how long it ran from
// here, and whether it passed, as a line of the file PROFILES_TEST_TIMES
// names (none: nothing is recorded). deploy/test.sh prints the slowest
// ones, which tells where the suite's time goes.
func recordDuration(t *testing.T) {
	path := os.Getenv("PROFILES_TEST_TIMES")
	if path == "" {
		return
	}
	start := time.Now()
	t.Cleanup(func() {
		result := "pass"
		if t.Failed() {
			result = "fail"
		}
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Logf("recording the test's duration: %v", err)
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "%.1f\t%s\t%s\n", time.Since(start).Seconds(), t.Name(), result)
	})
}
