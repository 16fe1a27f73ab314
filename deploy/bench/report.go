package bench

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Report is everything one run measured. It is written as JSON
// (latest.json), as markdown (latest.md, and BENCH.md's results section)
// and as a chart (latency.png).
type Report struct {
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Machine Machine   `json:"machine"`
	Setup   Setup     `json:"setup"`

	Seed           SeedResult     `json:"seed"`
	ProduceCeiling ProducePerf    `json:"produce_ceiling"`
	ConsumeCeiling ConsumePerf    `json:"consume_ceiling"`
	Consumers      ConsumerChoice `json:"consumers"`
	Replay         ReplayResult   `json:"replay"`
	ColdStart      []StartResult  `json:"cold_start"`
	LoadSeconds    float64        `json:"load_seconds"`
	// StandbySeconds is how long after LoadSeconds the query-svc instances
	// also held every profile warm for each other (STANDBYS=1).
	StandbySeconds float64          `json:"standby_seconds,omitempty"`
	WriteWarmup    *WriteWarmup     `json:"write_warmup,omitempty"`
	Scenarios      []ScenarioResult `json:"scenarios"`
	WriteToVisible *WriteToVisible  `json:"write_to_visible,omitempty"`
	Restarts       []RestartResult  `json:"restarts"`
	Failover       *FailoverResult  `json:"failover,omitempty"`
	RSS            []RSSResult      `json:"rss"`
	CeilingRSSMB   float64          `json:"ceiling_rss_mb"`
	Profiles       []ProfileSummary `json:"profiles"`

	// Figures and Aims are derived from the above (see finish).
	Figures []Figure `json:"figures"`
	Aims    []Aim    `json:"aims"`
}

// Machine is where the run happened.
type Machine struct {
	CPUs         int    `json:"cpus"`
	OS           string `json:"os"`
	GoVersion    string `json:"go"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

// Setup is the run's configuration.
type Setup struct {
	Size             string  `json:"size"`
	Profiles         int     `json:"profiles"`
	Partitions       int     `json:"partitions"`
	WarmupSeconds    float64 `json:"warmup_seconds"`
	DurationSeconds  float64 `json:"duration_seconds"`
	ReadConcurrency  int     `json:"read_concurrency"`
	WriteConcurrency int     `json:"write_concurrency"`
	OpenFraction     float64 `json:"open_fraction"`
	Instances        string  `json:"instances"`
	Prefix           string  `json:"prefix"`
	GoMemLimit       string  `json:"gomemlimit,omitempty"`
}

// WriteWarmup is the unmeasured run of writes before the first write
// scenario (Config.WriteWarmup).
type WriteWarmup struct {
	Seconds float64 `json:"seconds"`
	OK      int64   `json:"ok"`
	Errors  int64   `json:"errors"`
	// CPU is the cores each process used meanwhile (kafkaJIT: the
	// broker's JIT compiler), as in a scenario's CPU.
	CPU map[string]float64 `json:"cpu"`
}

// ScenarioResult is one scenario and its HTTP ceiling, side by side.
type ScenarioResult struct {
	Name          string `json:"name"`
	Title         string `json:"title"`
	Closed        Result `json:"closed"`
	CeilingClosed Result `json:"ceiling_closed"`
	Open          Result `json:"open"`
	CeilingOpen   Result `json:"ceiling_open"`
	// CPU is the cores each process used during each run.
	CPU map[string]map[string]float64 `json:"cpu_cores"`
	// BrokerRequests is, for a write scenario's closed loop, the broker's
	// requests of each API per answered request, and "all" for their sum
	// (see brokerMeters); nil where they could not be read.
	BrokerRequests map[string]float64 `json:"broker_requests_per_request,omitempty"`
	Profile        string             `json:"profile,omitempty"`
	// CPUPerRequest is the CPU time one request cost in the closed-loop
	// runs, in µs: ours counts the services and the broker, the ceiling
	// its own process (the load generator is left out of both).
	CPUPerRequest struct {
		Ours    float64 `json:"ours_us"`
		Ceiling float64 `json:"ceiling_us"`
	} `json:"cpu_per_request"`
}

// WriteToVisible is the open-loop POST (which answers once GET and search
// show the write) at half of the maximum POST rate, and Kafka's own
// producer at the same rate.
type WriteToVisible struct {
	Rate    float64     `json:"rate_per_s"`
	Latency Latency     `json:"latency"`
	Errors  int64       `json:"errors"`
	Produce ProducePerf `json:"produce_at_same_rate"`
}

// StartResult is how long a service took to be ready at the first start,
// when it loads everything from Kafka.
type StartResult struct {
	Proc         string  `json:"proc"`
	ReadySeconds float64 `json:"ready_seconds"`
}

// RestartResult is one stop and start of a process.
type RestartResult struct {
	Proc           string  `json:"proc"`
	StopSeconds    float64 `json:"stop_seconds"`
	HealthySeconds float64 `json:"healthy_seconds"`
	ReadySeconds   float64 `json:"ready_seconds"`
	Profile        string  `json:"profile,omitempty"`
	// Timeline is the first line of each message the process logged
	// during its start, with the time since the start.
	Timeline []string `json:"timeline,omitempty"`
}

// RSSResult is a service's resident memory after the load and at the end.
type RSSResult struct {
	Proc        string  `json:"proc"`
	AfterLoadMB float64 `json:"after_load_mb"`
	AtEndMB     float64 `json:"at_end_mb"`
}

// Figure is one measured value next to its ceiling. Ratio is
// Value/Ceiling: for a throughput, higher is better (1 = the ceiling); for
// a latency, a time or a size, lower is better (1 = the ceiling).
type Figure struct {
	Group       string  `json:"group"`
	Name        string  `json:"name"`
	Value       float64 `json:"value"`
	Unit        string  `json:"unit"`
	Ceiling     float64 `json:"ceiling"`
	CeilingName string  `json:"ceiling_name"`
	Ratio       float64 `json:"ratio"`
}

// Aim is one of the targets and whether this run met it.
type Aim struct {
	Aim    string  `json:"aim"`
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	Note   string  `json:"note,omitempty"`
}

func newReport(cfg Config) *Report {
	return &Report{
		Started: time.Now().UTC().Truncate(time.Second),
		Machine: machine(),
		Setup: Setup{
			Size: cfg.Size, Profiles: cfg.Profiles, Partitions: cfg.Partitions,
			WarmupSeconds: cfg.Warmup.Seconds(), DurationSeconds: cfg.Duration.Seconds(),
			ReadConcurrency: cfg.ReadConcurrency, WriteConcurrency: cfg.WriteConcurrency, OpenFraction: cfg.OpenFraction,
			Instances: "2 query-svc, 2 command-svc, 1 projector, 1 broker", Prefix: cfg.Prefix, GoMemLimit: cfg.GoMemLimit,
		},
	}
}

func ratio(v, c float64) float64 {
	if c == 0 {
		return 0
	}
	return float64(int64(v/c*1000+0.5)) / 1000
}

// finish derives the figures and the aims.
func (r *Report) finish(t0 time.Time) {
	r.Seconds = round2(time.Since(t0).Seconds())
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.Machine.LoadAvgEnd = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	r.Figures, r.Aims = nil, nil
	add := func(group, name string, v float64, unit string, c float64, cname string) Figure {
		f := Figure{Group: group, Name: name, Value: v, Unit: unit, Ceiling: c, CeilingName: cname, Ratio: ratio(v, c)}
		r.Figures = append(r.Figures, f)
		return f
	}
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		var ours float64
		for name, cores := range s.CPU["closed"] {
			if name != "bench" && name != "ceiling" && name != kafkaJIT { // kafkaJIT is a part of kafka
				ours += cores
			}
		}
		if s.Closed.Throughput > 0 {
			s.CPUPerRequest.Ours = round2(ours / s.Closed.Throughput * 1e6)
		}
		if s.CeilingClosed.Throughput > 0 {
			s.CPUPerRequest.Ceiling = round2(s.CPU["ceiling-closed"]["ceiling"] / s.CeilingClosed.Throughput * 1e6)
		}
	}
	scen := map[string]ScenarioResult{}
	for _, s := range r.Scenarios {
		scen[s.Name] = s
		add("throughput", s.Name, s.Closed.Throughput, "req/s", s.CeilingClosed.Throughput, "HTTP ceiling, closed loop")
		add("cpu", s.Name+" CPU per request", s.CPUPerRequest.Ours, "µs", s.CPUPerRequest.Ceiling, "HTTP ceiling process")
		if s.Open.Mode != "" {
			for _, q := range []struct {
				name string
				v, c float64
			}{{"p50", s.Open.Latency.P50, s.CeilingOpen.Latency.P50}, {"p99", s.Open.Latency.P99, s.CeilingOpen.Latency.P99},
				{"p99.9", s.Open.Latency.P999, s.CeilingOpen.Latency.P999}, {"max", s.Open.Latency.Max, s.CeilingOpen.Latency.Max}} {
				add("latency", s.Name+" "+q.name, q.v, "ms", q.c, fmt.Sprintf("HTTP ceiling at %.0f/s", s.Open.Rate))
			}
		}
	}
	consume := r.ConsumeCeiling.FetchThroughput
	add("kafka", "watermill-kafka subscriber, one acked message at a time (no decoding)", r.Consumers.Watermill, "records/s", consume, "ConsumerPerformance")
	add("kafka", "kafkax.Read, batches of sarama's partition consumer (no decoding)", r.Consumers.Read, "records/s", consume, "ConsumerPerformance")
	replay := add("kafka", "replay (fold, as the CLI reports it)", r.Replay.Rate, "events/s", consume, "ConsumerPerformance")
	if t := r.Replay.ReadSeconds + r.Replay.WriteSeconds; t > 0 {
		add("kafka", "replay (fold and write the generation)", float64(r.Replay.Events)/t, "events/s", consume, "ConsumerPerformance")
	}
	if r.LoadSeconds > 0 {
		add("kafka", "cold start: views built from Kafka", float64(r.Setup.Profiles)/r.LoadSeconds, "profiles/s", consume, "ConsumerPerformance")
	}
	if r.StandbySeconds > 0 {
		add("kafka", "standby views built from Kafka, once the owners serve", float64(r.Setup.Profiles)/r.StandbySeconds, "profiles/s", consume, "ConsumerPerformance")
	}
	add("kafka", "seed (the bench's sarama producer)", r.Seed.Rate, "events/s", r.ProduceCeiling.Throughput, "ProducerPerformance")
	if s, ok := scen["post-async"]; ok {
		add("kafka", "post-async", s.Closed.Throughput, "req/s", r.ProduceCeiling.Throughput, "ProducerPerformance")
	}
	var wtv Figure
	if w := r.WriteToVisible; w != nil {
		wtv = add("kafka", fmt.Sprintf("write-to-visible p99 at %.0f/s", w.Rate), w.Latency.P99, "ms", w.Produce.P99Ms, "ProducerPerformance p99 at the same rate")
		add("kafka", fmt.Sprintf("write-to-visible p50 at %.0f/s", w.Rate), w.Latency.P50, "ms", w.Produce.P50Ms, "ProducerPerformance p50 at the same rate")
	}
	var floor float64
	for _, x := range r.Restarts {
		if x.Proc == "ceiling" {
			floor = x.ReadySeconds
		}
	}
	var queryRestart *Figure
	for _, x := range r.Restarts {
		if x.Proc != "ceiling" {
			f := add("restart", x.Proc+" restart-to-ready", x.ReadySeconds, "s", floor, "HTTP ceiling restart-to-ready")
			if strings.HasPrefix(x.Proc, "query-svc") {
				queryRestart = &f
			}
		}
	}
	for _, x := range r.RSS {
		add("memory", x.Proc+" RSS after the load", x.AfterLoadMB, "MiB", r.CeilingRSSMB, "HTTP ceiling RSS")
	}

	size := fmt.Sprintf("%d profiles", r.Setup.Profiles)
	aimRatio := func(name, fig string, v, target float64) {
		r.Aims = append(r.Aims, Aim{Aim: name, Figure: fig, Value: v, Unit: "× ceiling", Met: v >= target})
	}
	// Throughput aims, as ratios to the HTTP ceiling: the GET and async POST
	// aims of the earlier issues, then those of "Writes at Kafka's speed".
	for _, a := range []struct {
		scenario, aim string
		target        float64
	}{
		{"get-owner", "GET ≥ 0.6× the HTTP ceiling", 0.6},
		{"get-forwarded", "GET ≥ 0.6× the HTTP ceiling (forwarded)", 0.6},
		{"post-async", "async POST ≥ 0.5× the HTTP ceiling", 0.5},
		{"post", "POST (waits until visible) ≥ 0.2× the HTTP ceiling", 0.2},
		{"post-async", "async POST ≥ 0.4× the HTTP ceiling", 0.4},
		{"put", "PUT ≥ 0.25× the HTTP ceiling", 0.25},
	} {
		if s, ok := scen[a.scenario]; ok {
			aimRatio(a.aim, a.scenario+" throughput", ratio(s.Closed.Throughput, s.CeilingClosed.Throughput), a.target)
		}
	}
	if s, ok := scen["post"]; ok && s.CPUPerRequest.Ours > 0 {
		r.Aims = append(r.Aims, Aim{Aim: "CPU per acknowledged POST, services + broker ≤ 300 µs", Figure: "post CPU per request",
			Value: s.CPUPerRequest.Ours, Unit: "µs", Met: s.CPUPerRequest.Ours <= 300})
	}
	aimRatio("replay ≥ 0.5× the consume ceiling", replay.Name, replay.Ratio, 0.5)
	if r.WriteToVisible != nil {
		r.Aims = append(r.Aims, Aim{Aim: "write-to-visible p99 ≤ 25 ms at half the maximum write rate", Figure: wtv.Name,
			Value: wtv.Value, Unit: "ms", Met: wtv.Value <= 25 && r.WriteToVisible.Errors == 0})
	}
	if f := r.Failover; f != nil {
		r.Aims = append(r.Aims, Aim{Aim: "reads of a dead owner's partitions served again ≤ 3 s", Figure: "failover: the slowest read answered after the kill",
			Value: f.SlowestSeconds, Unit: "s", Met: f.SlowestSeconds <= 3 && f.Errors == 0})
	}
	if queryRestart != nil {
		a := Aim{Aim: "restart-to-ready ≤ 2 s for 1,000,000 profiles", Figure: queryRestart.Name, Value: queryRestart.Value, Unit: "s", Met: queryRestart.Value <= 2}
		if r.Setup.Profiles < 1_000_000 {
			a.Note = "measured at " + size
		}
		r.Aims = append(r.Aims, a)
	}
}

// fmtNum formats a figure with a precision that suits its size.
func fmtNum(v float64) string {
	switch a := max(v, -v); {
	case a == 0:
		return "0"
	case a < 1:
		return fmt.Sprintf("%.3f", v)
	case a < 10:
		return fmt.Sprintf("%.2f", v)
	case a < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// Markdown renders the results section.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("Run of %s UTC, size `%s`: %d profiles (%d events), %d partitions, %s; %gs per measured run after a %gs warm-up. "+
		"The whole run took %.0fs. Machine: %d CPUs, load average %s at the start and %s at the end (other jobs share it).\n\n",
		r.Started.Format("2006-01-02 15:04"), r.Setup.Size, r.Setup.Profiles, r.Seed.Events, r.Setup.Partitions, r.Setup.Instances,
		r.Setup.DurationSeconds, r.Setup.WarmupSeconds, r.Seconds, r.Machine.CPUs, r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)

	if r.Setup.GoMemLimit != "" {
		w("Every service ran with `GOMEMLIMIT=%s`.\n\n", r.Setup.GoMemLimit)
	}
	if ww := r.WriteWarmup; ww != nil {
		w("Before the first write scenario, %gs of writes (POSTs that wait until visible, async POSTs and PUTs, %d answered, %d errors) ran unmeasured, "+
			"with a flight recording of the broker that was thrown away, so that the broker, which starts with the run, had compiled "+
			"its transaction paths and the profiler's code: its JIT compiler used %.2f cores meanwhile "+
			"(the kafka-jit column below is what was left to compile).\n\n", ww.Seconds, ww.OK, ww.Errors, ww.CPU[kafkaJIT])
	}
	w("### Aims\n\n| aim | figure | this run | met |\n|---|---|---:|:---:|\n")
	for _, a := range r.Aims {
		met := "no"
		if a.Met {
			met = "**yes**"
		}
		note := ""
		if a.Note != "" {
			note = " (" + a.Note + ")"
		}
		w("| %s | %s%s | %s %s | %s |\n", a.Aim, a.Figure, note, fmtNum(a.Value), a.Unit, met)
	}

	w("\n### Throughput: closed loop at maximum, next to the HTTP ceiling\n\n")
	w("Ratio = ours / ceiling (1 = as fast as the empty handler on the same router). CPU per request: the CPU time of the services and the broker " +
		"(ours) or of the ceiling process, per answered request, during the same runs; the load generator is left out of both. " +
		"It is less noisy than the throughput on a shared machine.\n\n")
	w("| scenario | workers | ours (req/s) | ceiling (req/s) | ratio | CPU µs/req ours / ceiling | errors | forwarded |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Scenarios {
		w("| %s | %d | %s | %s | %.3f | %s / %s | %d | %s |\n", s.Name, s.Closed.Concurrency, fmtNum(s.Closed.Throughput),
			fmtNum(s.CeilingClosed.Throughput), ratio(s.Closed.Throughput, s.CeilingClosed.Throughput),
			fmtNum(s.CPUPerRequest.Ours), fmtNum(s.CPUPerRequest.Ceiling), s.Closed.Errors, share(s.Closed.Forwarded, s.Closed.Sent))
	}

	w("\n### Latency: open loop at %.0f%% of our maximum, the ceiling at the same rate\n\n", r.Setup.OpenFraction*100)
	w("Milliseconds, from the intended send time (no coordinated omission), HdrHistogram (3 significant digits). Ratio = ours / ceiling at p99.\n\n")
	w("| scenario | rate (/s) | p50 ours / ceiling | p99 ours / ceiling | p99.9 ours / ceiling | max ours / ceiling | p99 ratio | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Scenarios {
		if s.Open.Mode == "" {
			w("| %s | – | – | – | – | – | – | – |\n", s.Name)
			continue
		}
		o, c := s.Open.Latency, s.CeilingOpen.Latency
		w("| %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %.1f | %d |\n", s.Name, fmtNum(s.Open.Rate),
			fmtNum(o.P50), fmtNum(c.P50), fmtNum(o.P99), fmtNum(c.P99), fmtNum(o.P999), fmtNum(c.P999), fmtNum(o.Max), fmtNum(c.Max),
			ratio(o.P99, c.P99), s.Open.Errors)
	}

	w("\n### Kafka-bound figures, next to Kafka's own tools\n\n")
	w("| figure | ours | ceiling | ceiling is | ratio |\n|---|---:|---:|---|---:|\n")
	for _, f := range r.Figures {
		if f.Group == "kafka" {
			w("| %s | %s %s | %s %s | %s | %.3f |\n", f.Name, fmtNum(f.Value), f.Unit, fmtNum(f.Ceiling), f.Unit, f.CeilingName, f.Ratio)
		}
	}
	w("\nProducerPerformance: %d records of %d bytes (our mean event record: key, value and headers), `%s`: %s records/s, p99 %s ms. "+
		"ConsumerPerformance over the %d events of the event log: %s records/s while fetching (%s with the group join).\n",
		r.ProduceCeiling.Records, r.ProduceCeiling.RecordSize, r.ProduceCeiling.Props, fmtNum(r.ProduceCeiling.Throughput), fmtNum(r.ProduceCeiling.P99Ms),
		r.ConsumeCeiling.Messages, fmtNum(r.ConsumeCeiling.FetchThroughput), fmtNum(r.ConsumeCeiling.Throughput))
	if r.Replay.Summary != "" {
		w("Replay: `%s`\n", r.Replay.Summary)
	}

	w("\n### Restart and memory\n\n| figure | ours | ceiling | ceiling is | ratio |\n|---|---:|---:|---|---:|\n")
	for _, f := range r.Figures {
		if f.Group == "restart" || f.Group == "memory" {
			w("| %s | %s %s | %s %s | %s | %.1f |\n", f.Name, fmtNum(f.Value), f.Unit, fmtNum(f.Ceiling), f.Unit, f.CeilingName, f.Ratio)
		}
	}
	w("\n| process | stop (s) | /healthz after (s) | /readyz after (s) |\n|---|---:|---:|---:|\n")
	for _, x := range r.Restarts {
		w("| %s | %.2f | %.3f | %.3f |\n", x.Proc, x.StopSeconds, x.HealthySeconds, x.ReadySeconds)
	}
	for _, x := range r.Restarts {
		if len(x.Timeline) > 0 && x.Proc != "ceiling" {
			w("\n%s's log during the restart (time since the process started):\n\n```\n%s\n```\n", x.Proc, strings.Join(x.Timeline, "\n"))
		}
	}
	w("\n| process | RSS after the load (MiB) | RSS after the scenarios (MiB) | cold start to ready (s) |\n|---|---:|---:|---:|\n")
	for _, x := range r.RSS {
		ready := "–"
		for _, c := range r.ColdStart {
			if c.Proc == x.Proc {
				ready = fmt.Sprintf("%.1f", c.ReadySeconds)
			}
		}
		w("| %s | %.1f | %.1f | %s |\n", x.Proc, x.AfterLoadMB, x.AtEndMB, ready)
	}
	w("| HTTP ceiling | – | %.1f | – |\n", r.CeilingRSSMB)
	if f := r.Failover; f != nil {
		w("\n**Failover.** %s SIGKILLed while 8 workers read the profiles of its partitions from the other instance (closed loop), for %.0f s after the kill (the session timeout, the rebalance and the catch-up): %d reads, %d of them served from the survivor's warm copy (`X-Profiles-Standby`), %d failed; the slowest took %.3f s, p99 %.3f s.\n",
			f.Killed, f.WatchedSeconds, f.Reads, f.Standby, f.Errors, f.SlowestSeconds, f.P99Seconds)
	}

	w("\n### Where the CPU went (cores used during each closed-loop run)\n\n")
	w("%s is the part of kafka's CPU that the JVM's JIT compiler threads used: the broker starts with the run, and compiles the paths of each kind of work the first time it does it.\n\n", kafkaJIT)
	names := cpuNames(r)
	w("| scenario | %s |\n|---|%s\n", strings.Join(names, " | "), strings.Repeat("---:|", len(names)))
	for _, s := range r.Scenarios {
		for _, run := range []string{"closed", "ceiling-closed"} {
			row := []string{}
			for _, n := range names {
				if v, ok := s.CPU[run][n]; ok {
					row = append(row, fmt.Sprintf("%.2f", v))
				} else {
					row = append(row, "–")
				}
			}
			label := s.Name
			if run != "closed" {
				label += " (ceiling)"
			}
			w("| %s | %s |\n", label, strings.Join(row, " | "))
		}
	}

	var perReq []map[string]float64
	for _, s := range r.Scenarios {
		if s.BrokerRequests != nil {
			perReq = append(perReq, s.BrokerRequests)
		}
	}
	if apis := topAPIs(perReq); len(apis) > 0 {
		// The APIs of at least 0.05 requests per request in a scenario get a
		// column; the rest add up in "other".
		apis = slices.DeleteFunc(apis, func(api string) bool {
			return !slices.ContainsFunc(perReq, func(m map[string]float64) bool { return m[api] >= 0.05 })
		})
		w("\n### The broker's requests per request (write scenarios' closed loops)\n\n" +
			"The broker's request meters (`kafka.network:type=RequestMetrics,name=RequestsPerSec`, their `Count`, every API and version), " +
			"read every second over JMX by Kafka's JmxTool, over each closed loop after its warm-up, divided by the requests it answered. " +
			"AddPartitionsToTxnVerification is the broker asking its transaction coordinator (itself here) whether a transactional Produce's partition is in the transaction.\n\n")
		w("| scenario | all | %s | other |\n|---|---:|%s---:|\n", strings.Join(apis, " | "), strings.Repeat("---:|", len(apis)))
		for _, s := range r.Scenarios {
			if s.BrokerRequests == nil {
				continue
			}
			row := []string{fmt.Sprintf("%.2f", s.BrokerRequests["all"])}
			other := s.BrokerRequests["all"]
			for _, api := range apis {
				row = append(row, fmt.Sprintf("%.2f", s.BrokerRequests[api]))
				other -= s.BrokerRequests[api]
			}
			row = append(row, fmt.Sprintf("%.2f", max(other, 0)))
			w("| %s | %s |\n", s.Name, strings.Join(row, " | "))
		}
	}

	if len(r.Profiles) > 0 {
		w("\n### CPU profiles (pprof)\n\nTaken through the pprof listener the bench adds at build time (the services do not serve /debug/pprof). " +
			"Files under `deploy/bench/results/profiles/`; open one with `go tool pprof -http=: FILE`. " +
			"The broker's, during the write scenarios, are Java Flight Recordings (`.jfr`, taken with the broker JVM's jcmd; open one with `jfr print` or JDK Mission Control).\n")
		for _, p := range r.Profiles {
			w("\n<details><summary>%s: %s, %ds (%s)</summary>\n\n```\n%s\n```\n", p.Run, p.Proc, p.Seconds, p.Header, strings.Join(p.Flat, "\n"))
			if len(p.Breakdown) > 0 {
				w("\nWhere the samples went:\n\n```\n%s\n```\n", strings.Join(p.Breakdown, "\n"))
			}
			if len(p.Goroutines) > 0 {
				w("\nLargest goroutine groups halfway through (count × innermost frames):\n\n```\n%s\n```\n", strings.Join(p.Goroutines, "\n"))
			}
			w("</details>\n")
		}
	}
	return b.String()
}

// cpuNames are the processes of the CPU table, in a fixed order.
func cpuNames(r *Report) []string {
	order := []string{"bench", "ceiling", "kafka", kafkaJIT, "query-svc-0", "query-svc-1", "command-svc-0", "command-svc-1", "projector-0", "frontdoor-0"}
	seen := map[string]bool{}
	for _, s := range r.Scenarios {
		for _, m := range s.CPU {
			for n := range m {
				seen[n] = true
			}
		}
	}
	var out []string
	for _, n := range order {
		if seen[n] {
			out = append(out, n)
		}
	}
	return out
}

func share(part, total int64) string {
	if total == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", float64(part)*100/float64(total))
}

// Markers of BENCH.md's results section, which WriteReport rewrites.
const (
	resultsBegin = "<!-- BEGIN RESULTS: written by make bench (deploy/bench); edit above or below, not here -->"
	resultsEnd   = "<!-- END RESULTS -->"
)

// WriteReport writes latest.json, latest.md and latency.png into
// cfg.OutDir, and the results section of cfg.BenchMD when set.
func WriteReport(r *Report, cfg Config) error {
	md := r.Markdown()
	if err := os.WriteFile(filepath.Join(cfg.OutDir, "latest.json"), append(mustJSON(r), '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.OutDir, "latest.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := Chart(r, filepath.Join(cfg.OutDir, "latency.png")); err != nil {
		return err
	}
	if cfg.BenchMD == "" {
		return nil
	}
	return UpdateBenchMD(cfg.BenchMD, md)
}

// UpdateBenchMD replaces the text between the result markers of the file
// (appending the markers when missing).
func UpdateBenchMD(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	block := resultsBegin + "\n\n" + strings.TrimSpace(section) + "\n\n" + resultsEnd
	i, j := strings.Index(s, resultsBegin), strings.Index(s, resultsEnd)
	if i >= 0 && j > i {
		s = s[:i] + block + s[j+len(resultsEnd):]
	} else {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += "\n## Latest results\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// Chart draws the open-loop latency percentiles of every scenario (solid)
// and of the HTTP ceiling at the same rate (dashed), on a log scale.
func Chart(r *Report, file string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Open loop at %.0f%% of each scenario's maximum: ours (solid), HTTP ceiling at the same rate (dashed)", r.Setup.OpenFraction*100)
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.Text = "milliseconds (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.NominalX("p50", "p90", "p99", "p99.9", "max")
	p.Legend.Top = true
	p.Legend.Left = true
	palette := []color.RGBA{
		{0x1f, 0x77, 0xb4, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xd6, 0x27, 0x28, 0xff},
		{0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff}, {0xe3, 0x77, 0xc2, 0xff}, {0x7f, 0x7f, 0x7f, 0xff},
	}
	pts := func(l Latency) plotter.XYs {
		vals := []float64{l.P50, l.P90, l.P99, l.P999, l.Max}
		xy := make(plotter.XYs, len(vals))
		for i, v := range vals {
			xy[i].X, xy[i].Y = float64(i), max(v, 0.01) // a log scale has no 0
		}
		return xy
	}
	n := 0
	for _, s := range r.Scenarios {
		if s.Open.Mode == "" || s.Open.Latency.Count == 0 {
			continue
		}
		c := palette[n%len(palette)]
		n++
		ours, err := plotter.NewLine(pts(s.Open.Latency))
		if err != nil {
			return err
		}
		ours.Color, ours.Width = c, vg.Points(2)
		sc, err := plotter.NewScatter(pts(s.Open.Latency))
		if err != nil {
			return err
		}
		sc.Color, sc.Shape = c, draw.CircleGlyph{}
		ceil, err := plotter.NewLine(pts(s.CeilingOpen.Latency))
		if err != nil {
			return err
		}
		ceil.Color, ceil.Width, ceil.Dashes = c, vg.Points(1), []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(ours, sc, ceil)
		p.Legend.Add(fmt.Sprintf("%s @ %.0f/s", s.Name, s.Open.Rate), ours)
	}
	if n == 0 {
		return fmt.Errorf("chart: no open-loop results")
	}
	return p.Save(11*vg.Inch, 6*vg.Inch, file)
}
