package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// bench is the state of one run.
type bench struct {
	cfg     Config
	kcfg    topology.Config
	kek     *pii.KEK // the services' PII_KEK: the seed seals with it
	env     []string // every service's environment
	bin     string
	logs    string
	query   []*Proc
	command []*Proc
	proj    []*Proc
	front   *Proc // the front door, over every instance
	ceiling *Proc
	client  *http.Client
	rep     *Report
	// part[i] is the partition of UID(i).
	part []int32
	// owner[p] is the index in query of the owner of partition p.
	owner  []int
	t0     time.Time
	runID  string
	counts struct{ post, async, put atomic.Uint64 }
}

func (b *bench) logf(format string, args ...any) {
	if b.cfg.Log == nil {
		return
	}
	fmt.Fprintf(b.cfg.Log, "[bench %6.1fs] %s\n", time.Since(b.t0).Seconds(), fmt.Sprintf(format, args...))
}

// Run runs the whole bench: it builds the binaries, seeds the event log,
// measures the Kafka ceilings and the replay, starts the services, runs
// every scenario next to its HTTP ceiling, restarts instances, and writes
// the report files. It stops everything it started before it returns.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	b := &bench{cfg: cfg, t0: time.Now(), runID: fmt.Sprintf("%06d", rand.IntN(1e6))}
	b.rep = newReport(cfg)
	defer b.stopAll()
	for _, d := range []string{cfg.DataDir, cfg.OutDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	b.bin = filepath.Join(cfg.DataDir, "bin")
	b.logs = filepath.Join(cfg.DataDir, "logs")
	if err := os.MkdirAll(b.logs, 0o755); err != nil {
		return nil, err
	}
	if err := b.run(ctx); err != nil {
		return b.rep, err
	}
	b.rep.finish(b.t0)
	if err := WriteReport(b.rep, cfg); err != nil {
		return b.rep, err
	}
	return b.rep, nil
}

func (b *bench) run(ctx context.Context) error {
	cfg := b.cfg
	b.logf("building the binaries (with the pprof overlay) into %s", b.bin)
	if err := Build(ctx, cfg.Repo, b.bin); err != nil {
		return err
	}
	if err := b.configure(); err != nil {
		return err
	}
	if err := topology.EnsureTopics(ctx, b.kcfg, "bench"); err != nil {
		return err
	}

	// The event log, and the produce ceiling next to it.
	b.logf("seeding %d ProfileCreated events into %s", cfg.Profiles, b.kcfg.EventsTopic)
	seed, err := Seed(ctx, b.kcfg, b.kek, cfg.Profiles)
	if err != nil {
		return err
	}
	b.rep.Seed = seed
	b.logf("seeded in %.1fs (%.0f events/s, %d bytes a record)", seed.Seconds, seed.Rate, seed.RecordBytes)
	perfTopic := cfg.Prefix + ".perf"
	if err := createTopic(b.kcfg.Brokers, perfTopic, int32(cfg.Partitions)); err != nil {
		return err
	}
	b.logf("produce ceiling: ProducerPerformance, %d records of %d bytes, acks=all", cfg.PerfRecords, seed.RecordBytes)
	b.rep.ProduceCeiling, err = RunProducePerf(ctx, cfg.Repo, cfg.Brokers, perfTopic, cfg.PerfRecords, seed.RecordBytes, 0)
	if err != nil {
		return err
	}
	b.logf("produce ceiling: %.0f records/s", b.rep.ProduceCeiling.Throughput)

	// Replay, and the consume ceiling just before it.
	b.logf("consume ceiling: ConsumerPerformance over the %d events of %s", cfg.Profiles, b.kcfg.EventsTopic)
	b.rep.ConsumeCeiling, err = RunConsumePerf(ctx, cfg.Repo, cfg.Brokers, b.kcfg.EventsTopic, cfg.Prefix+".consumer-perf", cfg.Profiles)
	if err != nil {
		return err
	}
	b.logf("consume ceiling: %.0f records/s while fetching (%.0f with the group join)", b.rep.ConsumeCeiling.FetchThroughput, b.rep.ConsumeCeiling.Throughput)
	b.logf("consumers: the %d events read with watermill-kafka's subscriber, then with kafkax.Read", cfg.Profiles)
	b.rep.Consumers, err = MeasureConsumers(ctx, b.kcfg.Sarama, b.kcfg.Brokers, b.kcfg.EventsTopic, cfg.Prefix+".watermill", cfg.Profiles)
	if err != nil {
		return err
	}
	b.logf("consumers: watermill %.0f records/s, kafkax.Read %.0f records/s", b.rep.Consumers.Watermill, b.rep.Consumers.Read)
	if err := b.replay(ctx); err != nil {
		return err
	}

	// The services, on the new generation.
	if err := b.startServices(ctx); err != nil {
		return err
	}
	for _, p := range b.services() {
		if rss, err := RSS(p.PID()); err == nil {
			b.rep.RSS = append(b.rep.RSS, RSSResult{Proc: p.Name, AfterLoadMB: mb(rss)})
		}
	}
	b.heapProfiles(ctx, "after-load")
	if err := b.startCeiling(ctx); err != nil {
		return err
	}
	if err := b.scenarios(ctx); err != nil {
		return err
	}
	for i, p := range b.services() {
		if rss, err := RSS(p.PID()); err == nil && i < len(b.rep.RSS) {
			b.rep.RSS[i].AtEndMB = mb(rss)
		}
	}
	if rss, err := RSS(b.ceiling.PID()); err == nil {
		b.rep.CeilingRSSMB = mb(rss)
	}
	if err := b.restarts(ctx); err != nil {
		return err
	}
	return b.failover(ctx)
}

// configure picks the ports and the services' environment.
func (b *bench) configure() error {
	cfg := b.cfg
	// ports[i] and its pprof port ports[7+i]: query-svc 0 and 1,
	// command-svc 0 and 1, the projector, the HTTP ceiling, the front door.
	ports := make([]int, 14)
	if cfg.PortBase > 0 {
		for i := range 7 {
			ports[i], ports[7+i] = cfg.PortBase+i, cfg.PortBase+20+i
		}
	} else {
		free, err := freePorts(14)
		if err != nil {
			return err
		}
		copy(ports, free)
	}
	p := cfg.Prefix
	b.kcfg = topology.Config{Config: kafkax.Config{Brokers: strings.Split(cfg.Brokers, ",")},
		EventsTopic: p + ".events", SnapshotsTopic: p + ".snapshots",
		EmailIndexTopic: p + ".email-index", ClaimsTopic: p + ".email-claims", DeadLetterTopic: p + ".dead-letters",
		ControlTopic: p + ".control", KeysTopic: p + ".profile-keys", Partitions: int32(cfg.Partitions),
	}
	kek, err := pii.Generate()
	if err != nil {
		return err
	}
	if b.kek, err = pii.ParseKEK(kek); err != nil {
		return err
	}
	b.env = []string{
		"KAFKA_BROKERS=" + cfg.Brokers,
		"EVENTS_TOPIC=" + b.kcfg.EventsTopic, "SNAPSHOTS_TOPIC=" + b.kcfg.SnapshotsTopic,
		"EMAIL_INDEX_TOPIC=" + b.kcfg.EmailIndexTopic, "EMAIL_CLAIMS_TOPIC=" + b.kcfg.ClaimsTopic,
		"DEAD_LETTER_TOPIC=" + b.kcfg.DeadLetterTopic, "CONTROL_TOPIC=" + b.kcfg.ControlTopic, "KEYS_TOPIC=" + b.kcfg.KeysTopic,
		"QUERY_GROUP=" + p + ".query", "COMMAND_GROUP=" + p + ".command", "PROJECTOR_GROUP=" + p + ".projector",
		fmt.Sprintf("TOPIC_PARTITIONS=%d", cfg.Partitions),
		"LOG_FORMAT=json", "LOG_LEVEL=info",
		// As under make run and in the end-to-end tests: no authentication
		// and no rate limit (one load generator is one client).
		"AUTH_MODE=off", "RATE_LIMIT_RPS=0",
		// A fresh key-encryption key for personal data, per run.
		"PII_KEK=" + kek,
	}
	if cfg.GoMemLimit != "" {
		b.env = append(b.env, "GOMEMLIMIT="+cfg.GoMemLimit)
	}
	proc := func(name string, port, pprofPort int, extra ...string) *Proc {
		env := append(append([]string{}, b.env...),
			fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", port), fmt.Sprintf("ADVERTISE_URL=http://127.0.0.1:%d", port),
			"INSTANCE_ID="+name, fmt.Sprintf("PROFILES_BENCH_PPROF_ADDR=127.0.0.1:%d", pprofPort))
		kind := name[:strings.LastIndexByte(name, '-')]
		return &Proc{Name: name, Port: port, PprofPort: pprofPort, Args: []string{filepath.Join(b.bin, kind)},
			Env: append(env, extra...), LogPath: filepath.Join(b.logs, name+".log")}
	}
	for i := range 2 {
		b.query = append(b.query, proc(fmt.Sprintf("query-svc-%d", i), ports[i], ports[7+i],
			"DATA_DIR="+filepath.Join(cfg.DataDir, fmt.Sprintf("query-%d", i))))
	}
	queryURLs := b.query[0].URL() + "," + b.query[1].URL()
	for i := range 2 {
		b.command = append(b.command, proc(fmt.Sprintf("command-svc-%d", i), ports[2+i], ports[9+i], "QUERY_URL="+queryURLs,
			"DATA_DIR="+filepath.Join(cfg.DataDir, fmt.Sprintf("command-%d", i))))
	}
	b.proj = append(b.proj, proc("projector-0", ports[4], ports[11], "DATA_DIR="+filepath.Join(cfg.DataDir, "projector-0")))
	b.front = proc("frontdoor-0", ports[6], ports[13], "QUERY_URL="+queryURLs, "COMMAND_URL="+b.command[0].URL()+","+b.command[1].URL())
	b.ceiling = &Proc{Name: "ceiling", Port: ports[5], Args: cfg.Self, LogPath: filepath.Join(b.logs, "ceiling.log"),
		Env: []string{CeilingRoleEnv + "=ceiling", fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", ports[5])}}
	b.client = NewClient(max(cfg.ReadConcurrency, cfg.WriteConcurrency, 64))
	b.part = make([]int32, cfg.Profiles)
	for i := range b.part {
		b.part[i] = kafkax.Partition(UID(i), int32(cfg.Partitions))
	}
	return nil
}

func (b *bench) services() []*Proc {
	return append(append(append(append([]*Proc{}, b.query...), b.command...), b.proj...), b.front)
}

// pids are the processes whose CPU a run accounts for.
func (b *bench) pids() map[string]int {
	out := map[string]int{"bench": os.Getpid()}
	for _, p := range append(b.services(), b.ceiling) {
		if p != nil && p.Running() {
			out[p.Name] = p.PID()
		}
	}
	if b.cfg.KafkaData != "" {
		if raw, err := os.ReadFile(filepath.Join(b.cfg.KafkaData, "kafka.pid")); err == nil {
			var pid int
			if _, err := fmt.Sscan(strings.TrimSpace(string(raw)), &pid); err == nil {
				out["kafka"] = pid
			}
		}
	}
	return out
}

// kafkaJIT names the CPU meter of the broker's JIT compiler threads: a
// part of "kafka", shown apart because a broker started for the run
// compiles its hot paths during the first scenarios that use them, which
// a long-running broker did long ago.
const kafkaJIT = "kafka-jit"

// cpuSources are the CPU meters of a scenario: every process of pids, and
// kafkaJIT.
func (b *bench) cpuSources() map[string]cpuSource {
	out := map[string]cpuSource{}
	for name, pid := range b.pids() {
		out[name] = func() (float64, error) { return CPUSeconds(pid) }
		if name == "kafka" {
			out[kafkaJIT] = func() (float64, error) { return ThreadCPUSeconds(pid, JITThread) }
		}
	}
	return out
}

// stopAll stops every process at once (a service drains for seconds),
// each killed if it still runs 20 s after its SIGTERM.
func (b *bench) stopAll() {
	var wg sync.WaitGroup
	for _, p := range append(b.services(), b.ceiling) {
		if p != nil && p.Running() {
			wg.Go(func() { p.Stop(20 * time.Second) })
		}
	}
	wg.Wait()
}

// replay runs `replay snapshots` over the seeded log (a CPU profile of it
// meanwhile), then switches to the new generation.
func (b *bench) replay(ctx context.Context) error {
	pprofPort := 0
	if b.cfg.Profile {
		if ps, err := freePorts(1); err == nil {
			pprofPort = ps[0]
		}
	}
	p := &Proc{Name: "replay", PprofPort: pprofPort, Args: []string{filepath.Join(b.bin, "replay"), "snapshots"},
		Env: append(append([]string{}, b.env...), fmt.Sprintf("PROFILES_BENCH_PPROF_ADDR=127.0.0.1:%d", pprofPort)), LogPath: filepath.Join(b.logs, "replay.log")}
	if pprofPort == 0 {
		p.Env = b.env
	}
	b.logf("replay: bin/replay snapshots over %d events", b.cfg.Profiles)
	var logFrom int
	if st, err := os.Stat(p.LogPath); err == nil {
		logFrom = int(st.Size())
	}
	start := time.Now()
	if err := p.Start(); err != nil {
		return err
	}
	var prof chan *ProfileSummary
	if pprofPort != 0 {
		// Profile the fold: from its first line on, for as long as it
		// would take at half the consume ceiling's pace (at least 1 s).
		secs := int(2 * float64(b.cfg.Profiles) / max(b.rep.ConsumeCeiling.FetchThroughput, 1))
		secs = min(max(secs, 1), 10)
		prof = make(chan *ProfileSummary, 1)
		go func() {
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && p.Running(); time.Sleep(10 * time.Millisecond) {
				if out, err := os.ReadFile(p.LogPath); err == nil && len(out) > logFrom && strings.Contains(string(out[logFrom:]), "replay: folding") {
					break
				}
			}
			prof <- b.captureCPU(ctx, "replay", p, secs, 300*time.Millisecond)
		}()
	}
	err := p.Wait()
	wall := time.Since(start)
	out, _ := os.ReadFile(p.LogPath)
	if len(out) >= logFrom {
		out = out[logFrom:]
	}
	if err != nil {
		return fmt.Errorf("replay snapshots: %v\n%s", err, tail(string(out), 3000))
	}
	rr, err := ParseReplay(string(out))
	if err != nil {
		return err
	}
	rr.WallSeconds = round2(wall.Seconds())
	b.rep.Replay = rr
	if prof != nil {
		if s := <-prof; s != nil {
			b.rep.Profiles = append(b.rep.Profiles, *s)
		}
	}
	b.logf("replay: %s", rr.Summary)
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "replay"), "switch", "-generation", "2", "-force")
	cmd.Env = append(os.Environ(), b.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("replay switch: %v\n%s", err, out)
	}
	return nil
}

// startServices starts two query-svc, two command-svc and one projector
// instance and waits until they are ready and the views hold every profile.
func (b *bench) startServices(ctx context.Context) error {
	start := time.Now()
	for _, p := range b.services() {
		if err := p.Start(); err != nil {
			return err
		}
	}
	b.logf("started %d services; waiting for readiness and for the views to hold %d profiles", len(b.services()), b.cfg.Profiles)
	errs := make([]error, len(b.services()))
	readies := make([]time.Duration, len(b.services()))
	var wg sync.WaitGroup
	for i, p := range b.services() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, readies[i], errs[i] = p.Ready(ctx, b.cfg.LoadTimeout)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, p := range b.services() {
		b.rep.ColdStart = append(b.rep.ColdStart, StartResult{Proc: p.Name, ReadySeconds: round2(readies[i].Seconds())})
	}
	deadline := time.Now().Add(b.cfg.LoadTimeout)
	for {
		n, _, err := b.assignment(ctx)
		if err == nil && n >= b.cfg.Profiles {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the views hold %d of %d profiles after %s (%v)", n, b.cfg.Profiles, b.cfg.LoadTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	b.rep.LoadSeconds = round2(time.Since(start).Seconds())
	b.logf("loaded in %.1fs: every service ready, the views hold every profile", b.rep.LoadSeconds)
	// The standbys (STANDBYS=1: each instance keeps the other's partitions
	// warm) start once the owners serve; the scenarios measure the steady
	// state, after them. STANDBYS=0 in the bench's environment (which the
	// services inherit) turns them off.
	if os.Getenv("STANDBYS") == "0" {
		return nil
	}
	loaded := time.Now()
	for {
		_, warm, err := b.assignment(ctx)
		if err == nil && warm >= b.cfg.Profiles {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the standby views hold %d of %d profiles after %s (%v)", warm, b.cfg.Profiles, b.cfg.LoadTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	b.rep.StandbySeconds = round2(time.Since(loaded).Seconds())
	b.logf("standbys warm %.1fs later: each query-svc instance holds the other's profiles too", b.rep.StandbySeconds)
	return nil
}

// assignment reads /debug/assignment of every query-svc instance, sets the
// owner of every partition, and returns the live profiles the views hold
// for the partitions they own, and for those they keep warm as standbys.
func (b *bench) assignment(ctx context.Context) (owned, warm int, err error) {
	type debug struct {
		Group struct {
			State   string `json:"state"`
			Members []struct {
				URL        string  `json:"url"`
				Partitions []int32 `json:"partitions"`
			} `json:"members"`
		} `json:"group"`
		Ready   string           `json:"ready"`
		Counts  map[string]int64 `json:"profilesByPartition"`
		Standby map[string]int64 `json:"standbyProfilesByPartition"`
	}
	total := 0
	owner := make([]int, b.cfg.Partitions)
	for i := range owner {
		owner[i] = -1
	}
	for _, q := range b.query {
		var d debug
		if err := getJSON(ctx, q.URL()+"/debug/assignment", &d); err != nil {
			return 0, 0, err
		}
		if d.Group.State != "Stable" || d.Ready != "ready" {
			return 0, 0, fmt.Errorf("%s: group %s, %s", q.Name, d.Group.State, d.Ready)
		}
		for _, n := range d.Counts {
			total += int(n)
		}
		for _, n := range d.Standby {
			warm += int(n)
		}
		for _, m := range d.Group.Members {
			for k, qq := range b.query {
				if qq.URL() == m.URL {
					for _, p := range m.Partitions {
						owner[p] = k
					}
				}
			}
		}
	}
	for p, o := range owner {
		if o < 0 {
			return total, warm, fmt.Errorf("partition %d has no owner", p)
		}
	}
	b.owner = owner
	return total, warm, nil
}

func (b *bench) startCeiling(ctx context.Context) error {
	if err := b.ceiling.Start(); err != nil {
		return err
	}
	_, _, err := b.ceiling.Ready(ctx, time.Minute)
	return err
}

// captureCPU fetches a CPU profile of p over secs seconds (retrying the
// connection for up to wait, for a process that is just starting) and
// summarises it. It returns nil when no profile could be taken.
func (b *bench) captureCPU(ctx context.Context, name string, p *Proc, secs int, wait time.Duration) *ProfileSummary {
	if !b.cfg.Profile || p.PprofURL() == "" {
		return nil
	}
	dir := filepath.Join(b.cfg.OutDir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil
	}
	file := filepath.Join(dir, name+"-"+p.Name+".pb.gz")
	// Halfway through, where the goroutines wait.
	gfile := filepath.Join(dir, name+"-"+p.Name+".goroutines.txt")
	gdone := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			gdone <- false
			return
		case <-time.After(time.Duration(secs) * time.Second / 2):
		}
		gdone <- fetchProfile(ctx, p.PprofURL()+"/debug/pprof/goroutine?debug=1", gfile) == nil
	}()
	deadline := time.Now().Add(wait)
	for {
		err := fetchProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.PprofURL(), secs), file)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.logf("no CPU profile of %s during %s: %v", p.Name, name, err)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := summarizeProfile(ctx, name, p.Name, file, secs)
	if err != nil {
		b.logf("profile %s: %v", file, err)
		return nil
	}
	if <-gdone {
		if dump, err := os.ReadFile(gfile); err == nil {
			s.Goroutines, s.GoroutineFile = goroutineGroups(string(dump), 10), gfile
		}
	}
	// Paths in the report are relative to the repository when they can be.
	for _, f := range []*string{&s.File, &s.GoroutineFile} {
		if rel, err := filepath.Rel(b.cfg.Repo, *f); err == nil && *f != "" && !strings.HasPrefix(rel, "..") {
			*f = rel
		}
	}
	return s
}

// scenario is one kind of load against the services.
type scenario struct {
	name, title string
	source      Source
	concurrency int
	// profile is the process to profile during the closed-loop run.
	profile *Proc
	// write scenarios wait for the projector to drain before the next run.
	write bool
}

func (b *bench) scenarioList() []scenario {
	P := b.cfg.Profiles
	accept := http.Header{"Accept": {"application/json"}}
	jsonBody := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
	async := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}, "Prefer": {"respond-async"}}
	get := func(forwarded bool) Source {
		return func(uint64) Request {
			i := rand.IntN(P)
			o := b.owner[b.part[i]]
			if forwarded {
				o = 1 - o
			}
			return Request{Base: b.query[o].URL(), Method: http.MethodGet, Path: "/api/profile/" + UID(i), Header: accept, Want: http.StatusOK}
		}
	}
	search := func(seq uint64) Request {
		i := rand.IntN(P)
		return Request{Base: b.query[seq%2].URL(), Method: http.MethodGet, Path: "/api/search?email=" + Email(i), Header: accept, Want: http.StatusOK}
	}
	// Reads through the front door, the path that users take: by uid it
	// sends each to the owner; a search goes round-robin (see
	// package frontdoor).
	frontGet := func(uint64) Request {
		return Request{Base: b.front.URL(), Method: http.MethodGet, Path: "/api/profile/" + UID(rand.IntN(P)), Header: accept, Want: http.StatusOK}
	}
	frontSearch := func(uint64) Request {
		return Request{Base: b.front.URL(), Method: http.MethodGet, Path: "/api/search?email=" + Email(rand.IntN(P)), Header: accept, Want: http.StatusOK}
	}
	// Writes go to a command-svc instance (round-robin), or to the front
	// door, the path that users take.
	commandBase := func(seq uint64) string { return b.command[seq%2].URL() }
	frontBase := func(uint64) string { return b.front.URL() }
	post := func(isAsync bool, base func(uint64) string) Source {
		return func(seq uint64) Request {
			kind, h, want, n := "w", jsonBody, http.StatusCreated, b.counts.post.Add(1)
			if isAsync {
				kind, h, want, n = "a", async, http.StatusAccepted, b.counts.async.Add(1)
			}
			body := fmt.Sprintf(`{"username":"%s%d","email":"%s%s-%d@bench.example"}`, kind, n, kind, b.runID, n)
			return Request{Base: base(seq), Method: http.MethodPost, Path: "/api/profile", Body: []byte(body), Header: h, Want: want}
		}
	}
	put := func(base func(uint64) string) Source {
		return func(seq uint64) Request {
			n := b.counts.put.Add(1)
			i := int(n % uint64(P))
			body := fmt.Sprintf(`{"username":"put%d","email":"%s"}`, n, Email(i))
			return Request{Base: base(seq), Method: http.MethodPut, Path: "/api/profile/" + UID(i), Body: []byte(body), Header: jsonBody, Want: http.StatusOK}
		}
	}
	mixed := func(seq uint64) Request {
		if rand.IntN(10) == 0 {
			return put(commandBase)(seq)
		}
		i := rand.IntN(P)
		return Request{Base: b.query[seq%2].URL(), Method: http.MethodGet, Path: "/api/profile/" + UID(i), Header: accept, Want: http.StatusOK}
	}
	rc, wc := b.cfg.ReadConcurrency, b.cfg.WriteConcurrency
	return []scenario{
		{name: "get-owner", title: "GET /api/profile/{uid}, sent to the owner", source: get(false), concurrency: rc, profile: b.query[0]},
		{name: "get-forwarded", title: "GET /api/profile/{uid}, sent to the other instance (one hop)", source: get(true), concurrency: rc, profile: b.query[0]},
		{name: "search", title: "GET /api/search?email=, round-robin over the instances", source: search, concurrency: rc, profile: b.query[0]},
		{name: "front-get", title: "GET /api/profile/{uid} through the front door (routed to the owner)", source: frontGet, concurrency: rc, profile: b.front},
		{name: "front-search", title: "GET /api/search?email= through the front door (round-robin)", source: frontSearch, concurrency: rc, profile: b.front},
		{name: "post", title: "POST /api/profile, waits until visible (201)", source: post(false, commandBase), concurrency: wc, profile: b.command[0], write: true},
		{name: "post-async", title: "POST /api/profile, Prefer: respond-async (202)", source: post(true, commandBase), concurrency: wc, profile: b.command[0], write: true},
		{name: "put", title: "PUT /api/profile/{uid}, a new username, waits until visible", source: put(commandBase), concurrency: wc, profile: b.command[0], write: true},
		{name: "front-post", title: "POST /api/profile through the front door, waits until visible (201)", source: post(false, frontBase), concurrency: wc, profile: b.command[0], write: true},
		{name: "front-post-async", title: "POST /api/profile through the front door, Prefer: respond-async (202)", source: post(true, frontBase), concurrency: wc, profile: b.command[0], write: true},
		{name: "front-put", title: "PUT /api/profile/{uid} through the front door, waits until visible", source: put(frontBase), concurrency: wc, profile: b.command[0], write: true},
		{name: "mixed", title: "90% GET (round-robin) / 10% PUT", source: mixed, concurrency: wc, write: true},
	}
}

// scenarios runs each scenario next to its ceiling: closed loop (ours,
// then the ceiling's), then open loop at OpenFraction of our maximum (ours,
// then the ceiling's at the same rate).
func (b *bench) scenarios(ctx context.Context) error {
	for _, name := range b.cfg.Scenarios {
		if !slices.ContainsFunc(b.scenarioList(), func(s scenario) bool { return s.name == name }) {
			return fmt.Errorf("no scenario %q (-scenarios)", name)
		}
	}
	warmed := false
	var meters *brokerMeters
	windows := map[string][2]time.Time{} // a write scenario's measured closed loop
	defer func() {
		if meters == nil {
			return
		}
		samples, err := meters.stop()
		if err != nil {
			b.logf("the broker's request counts: %v", err)
		}
		for i := range b.rep.Scenarios {
			res := &b.rep.Scenarios[i]
			if w, ok := windows[res.Name]; ok {
				res.BrokerRequests = requestsPerRequest(samples, w[0], w[1], res.Closed.Throughput)
			}
		}
	}()
	for _, s := range b.scenarioList() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(b.cfg.Scenarios) > 0 && !slices.Contains(b.cfg.Scenarios, s.name) {
			continue
		}
		if s.write && !warmed {
			warmed = true
			b.warmWrites(ctx)
			if pid, ok := b.pids()["kafka"]; ok {
				var err error
				if meters, err = startBrokerMeters(ctx, pid, filepath.Join(b.logs, "broker-requests.txt")); err != nil {
					b.logf("no counts of the broker's requests: %v", err)
				}
			}
		}
		res := ScenarioResult{Name: s.name, Title: s.title, CPU: map[string]map[string]float64{}}
		ours := Load{Client: b.client, Source: s.source}
		ceil := Load{Client: b.client, Source: s.source, Base: b.ceiling.URL()}

		var prof chan *ProfileSummary
		if s.profile != nil && b.cfg.Profile {
			prof = make(chan *ProfileSummary, 1)
			go func() {
				time.Sleep(b.cfg.Warmup)
				prof <- b.captureCPU(ctx, s.name, s.profile, max(1, int(b.cfg.Duration.Seconds())-1), time.Second)
			}()
		}
		var kprof chan *ProfileSummary
		if pid, ok := b.pids()["kafka"]; ok && s.write && b.cfg.Profile {
			kprof = make(chan *ProfileSummary, 1)
			go func() {
				time.Sleep(b.cfg.Warmup)
				kprof <- b.captureBroker(ctx, s.name, pid, max(1, int(b.cfg.Duration.Seconds())-1))
			}()
		}
		cpu := startCPU(b.cpuSources())
		from := time.Now().Add(b.cfg.Warmup)
		res.Closed = ours.ClosedLoop(ctx, s.concurrency, b.cfg.Warmup, b.cfg.Duration)
		res.CPU["closed"] = cpu.stop()
		if s.write {
			windows[s.name] = [2]time.Time{from, time.Now()}
		}
		if prof != nil {
			if p := <-prof; p != nil {
				res.Profile = p.File
				b.rep.Profiles = append(b.rep.Profiles, *p)
			}
		}
		if kprof != nil {
			if p := <-kprof; p != nil {
				b.rep.Profiles = append(b.rep.Profiles, *p)
			}
		}
		if s.write {
			b.settle(ctx)
		}
		cpu = startCPU(b.cpuSources())
		res.CeilingClosed = ceil.ClosedLoop(ctx, s.concurrency, b.cfg.Warmup, b.cfg.Duration)
		res.CPU["ceiling-closed"] = cpu.stop()
		b.logf("%-13s closed loop (%d workers): %8.0f/s (ceiling %8.0f/s), p99 %.1f ms (ceiling %.1f ms), %d errors",
			s.name, s.concurrency, res.Closed.Throughput, res.CeilingClosed.Throughput, res.Closed.Latency.P99, res.CeilingClosed.Latency.P99, res.Closed.Errors)

		rate := res.Closed.Throughput * b.cfg.OpenFraction
		if rate >= 1 {
			cpu = startCPU(b.cpuSources())
			res.Open = ours.OpenLoop(ctx, rate, b.cfg.MaxInFlight, b.cfg.Warmup, b.cfg.Duration)
			res.CPU["open"] = cpu.stop()
			if s.write {
				b.settle(ctx)
			}
			res.CeilingOpen = ceil.OpenLoop(ctx, rate, b.cfg.MaxInFlight, b.cfg.Warmup, b.cfg.Duration)
			b.logf("%-13s open loop at %.0f/s: p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms (ceiling p99 %.2f ms), %d errors",
				s.name, rate, res.Open.Latency.P50, res.Open.Latency.P99, res.Open.Latency.P999, res.Open.Latency.Max, res.CeilingOpen.Latency.P99, res.Open.Errors)
		}
		b.rep.Scenarios = append(b.rep.Scenarios, res)

		if s.name == "post" && rate >= 1 {
			// Write-to-visible: a POST answers 201 only once GET and search
			// show it, so its open-loop latency is the write-to-visible time.
			// Its ceiling: Kafka's own producer, acks=all, no linger, at the
			// same rate (a write cannot be visible before it is durable).
			// At least WTVRecords (1,000) records, or 15 seconds' worth at a
			// low rate, so that the JVM's first, slow sends (metadata,
			// connections) weigh on p99 as little as they can.
			n := max(int(rate*b.cfg.Duration.Seconds()), min(b.cfg.WTVRecords, int(rate*15)), 20)
			pp, err := RunProducePerf(ctx, b.cfg.Repo, b.cfg.Brokers, b.cfg.Prefix+".perf", n, b.rep.Seed.RecordBytes, rate, "linger.ms=0")
			if err != nil {
				return err
			}
			b.rep.WriteToVisible = &WriteToVisible{Rate: rate, Latency: res.Open.Latency, Errors: res.Open.Errors, Produce: pp}
			b.logf("write-to-visible at %.0f/s: p99 %.1f ms; ProducerPerformance at the same rate: p99 %.0f ms", rate, res.Open.Latency.P99, pp.P99Ms)
		}
		if s.write {
			b.settle(ctx)
		}
	}
	return nil
}

// warmWrites runs WriteWarmup of writes, unmeasured, a third each POSTs
// that wait until visible, async POSTs and PUTs (each its own
// transactions, claims and read_committed fetches), and then lets the
// projector drain them. The broker starts with the run: without this, its
// JIT compiler compiles the transaction paths during the first write
// scenario, which then pays for a broker younger than any that serves.
func (b *bench) warmWrites(ctx context.Context) {
	if b.cfg.WriteWarmup <= 0 {
		return
	}
	var sources []Source
	for _, s := range b.scenarioList() {
		switch s.name {
		case "post", "post-async", "put":
			sources = append(sources, s.source)
		}
	}
	writes := func(seq uint64) Request { return sources[seq%uint64(len(sources))](seq) }
	b.logf("warming up the write paths: %s of POSTs, async POSTs and PUTs, not measured", b.cfg.WriteWarmup)
	// The broker's first flight recording (JFR.start) compiles JFR's own
	// code: 0.38-0.41 cores of the broker's JIT during the first write
	// scenario otherwise, with or without writes before it. One recording
	// here, thrown away, takes that out of the scenarios' CPU.
	var jfr chan *ProfileSummary
	if pid, ok := b.pids()["kafka"]; ok && b.cfg.Profile {
		jfr = make(chan *ProfileSummary, 1)
		go func() { jfr <- b.captureBroker(ctx, "write-warmup", pid, max(1, int(b.cfg.WriteWarmup.Seconds())-1)) }()
	}
	cpu := startCPU(b.cpuSources())
	res := Load{Client: b.client, Source: writes}.ClosedLoop(ctx, b.cfg.WriteConcurrency, 0, b.cfg.WriteWarmup)
	b.rep.WriteWarmup = &WriteWarmup{Seconds: b.cfg.WriteWarmup.Seconds(), OK: res.OK, Errors: res.Errors, CPU: cpu.stop()}
	if jfr != nil {
		if p := <-jfr; p != nil {
			file := p.File
			if !filepath.IsAbs(file) {
				file = filepath.Join(b.cfg.Repo, file)
			}
			_ = os.Remove(file)
		}
	}
	b.settle(ctx)
	b.logf("warmed up: %d writes answered, %d errors; the broker's JIT compiler used %.2f cores meanwhile",
		res.OK, res.Errors, b.rep.WriteWarmup.CPU[kafkaJIT])
}

// settle waits (up to a minute) until the projector has folded every event
// written so far, so that one scenario's backlog does not load the next.
func (b *bench) settle(ctx context.Context) {
	client, err := sarama.NewClient(b.kcfg.Brokers, b.kcfg.Sarama("bench-lag"))
	if err != nil {
		return
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return
	}
	group := topology.GenerationGroup(b.cfg.Prefix+".projector", 2)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		// A transaction's commit marker follows its last record, so a
		// partition that the projector has drained still counts one
		// record behind its end offset.
		lag, err := groupLag(client, admin, group, b.kcfg.EventsTopic)
		if err == nil && lag <= int64(b.cfg.Partitions) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ctx.Err() == nil {
		b.logf("the projector has not caught up after a minute; going on")
	}
}

// groupLag is the number of records of topic that group has not committed.
func groupLag(client sarama.Client, admin sarama.ClusterAdmin, group, topic string) (int64, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return 0, err
	}
	offs, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	if err != nil {
		return 0, err
	}
	var lag int64
	for _, p := range parts {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return 0, err
		}
		blk := offs.GetBlock(topic, p)
		if blk == nil || blk.Offset < 0 {
			lag += end
			continue
		}
		lag += max(end-blk.Offset, 0)
	}
	return lag, nil
}

// restarts stops and restarts a query-svc instance (Pebble kept, static
// membership: it gets its partitions back and reads only the tail), a
// command-svc instance (it re-reads its partitions of the event log), and
// the HTTP ceiling (the floor: a process with the same router and nothing
// to load).
func (b *bench) restarts(ctx context.Context) error {
	targets := []*Proc{b.query[1]}
	if b.cfg.RestartCommand {
		targets = append(targets, b.command[1])
	}
	targets = append(targets, b.ceiling)
	for _, p := range targets {
		stopped := p.Stop(30 * time.Second)
		var logFrom int64
		if st, err := os.Stat(p.LogPath); err == nil {
			logFrom = st.Size()
		}
		if err := p.Start(); err != nil {
			return err
		}
		var prof chan *ProfileSummary
		if p != b.ceiling && b.cfg.Profile {
			prof = make(chan *ProfileSummary, 1)
			go func() { prof <- b.captureCPU(ctx, "restart", p, 2, time.Second) }()
		}
		healthy, ready, err := p.Ready(ctx, b.cfg.LoadTimeout)
		if err != nil {
			return err
		}
		r := RestartResult{Proc: p.Name, StopSeconds: round3(stopped.Seconds()), HealthySeconds: round3(healthy.Seconds()), ReadySeconds: round3(ready.Seconds()),
			Timeline: logTimeline(p.LogPath, logFrom, p.Started(), ready+time.Second)}
		if prof != nil {
			if s := <-prof; s != nil {
				r.Profile = s.File
				b.rep.Profiles = append(b.rep.Profiles, *s)
			}
		}
		b.rep.Restarts = append(b.rep.Restarts, r)
		b.logf("restart %s: stopped in %.2fs, healthy after %.3fs, ready after %.3fs", p.Name, r.StopSeconds, r.HealthySeconds, r.ReadySeconds)
	}
	// The restarted query-svc serves its partitions again.
	if _, _, err := b.assignment(ctx); err != nil {
		return fmt.Errorf("after the restart: %w", err)
	}
	return nil
}

func mb(bytes int64) float64   { return round2(float64(bytes) / (1 << 20)) }
func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// machine describes where the run happened.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvgStart = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// heapProfiles saves a heap profile of every service, after a collection
// (go tool pprof -sample_index=inuse_space), as profiles/heap-<when>-<proc>.pb.gz:
// what the memory that RSS counts is made of.
func (b *bench) heapProfiles(ctx context.Context, when string) {
	if !b.cfg.Profile {
		return
	}
	dir := filepath.Join(b.cfg.OutDir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for _, p := range b.services() {
		file := filepath.Join(dir, "heap-"+when+"-"+p.Name+".pb.gz")
		if err := fetchProfile(ctx, p.PprofURL()+"/debug/pprof/heap?gc=1", file); err != nil {
			b.logf("no heap profile of %s %s: %v", p.Name, when, err)
		}
	}
}
