package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// A scenario whose longest time without an acknowledged write is over
// issue 20's single-fault aim (SESSION_TIMEOUT + 2 s), and a test whose
// requests failed where none may (the rolling restart), log what the
// services and the brokers said during that time, and append it to the
// file PROFILES_TEST_DIGESTS names, which deploy/test.sh prints after the
// tests: a slow or failed run in CI, whose logs are gone with its
// machine, still shows its cause.

// maxDigestLines bounds a digest in the test's output.
const maxDigestLines = 60

// gap returns the longest time in which no write was acknowledged, as its
// start and end since the load began.
func (l *faultLoad) gap(end time.Duration) (from, to time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := append([]time.Duration(nil), l.okAt...)
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	var prev time.Duration
	for _, x := range append(at, end) {
		if x-prev > to-from {
			from, to = prev, x
		}
		prev = x
	}
	return from, to
}

// digestIfSlow records the digest of scenario's gap from from to to
// (since the load began) when it is longer than the suite's session
// timeout + 2 s. It does not lock l.mu.
func (l *faultLoad) digestIfSlow(scenario string, from, to time.Duration) {
	session, err := time.ParseDuration(l.s.env["SESSION_TIMEOUT"])
	if err != nil {
		return
	}
	if to-from <= session+2*time.Second {
		return
	}
	l.s.recordDigest(fmt.Sprintf("%s: no write was acknowledged from %.1f s to %.1f s, over the %s aim",
		scenario, from.Seconds(), to.Seconds(), session+2*time.Second), l.start.Add(from-time.Second), l.start.Add(to))
}

// recordDigest logs the digest of what the system's instances (and the
// fault suite's brokers) said from from to to, under title, and appends it
// to the file PROFILES_TEST_DIGESTS names.
func (s *System) recordDigest(title string, from, to time.Time) {
	s.t.Helper()
	lines := digest(from, to, s.logFiles(), clusterLogs())
	text := fmt.Sprintf("%s; what the services and brokers said from %s to %s (WARN and ERROR, and the brokers' fences and controller changes; repeated lines once, counted):\n%s\n",
		title, from.UTC().Format("15:04:05.000"), to.UTC().Format("15:04:05.000"), strings.Join(lines, "\n"))
	s.t.Log(text)
	if path := os.Getenv("PROFILES_TEST_DIGESTS"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			s.t.Logf("recording the digest: %v", err)
			return
		}
		defer f.Close()
		fmt.Fprint(f, text)
	}
}

// logFiles returns the log file of every instance the system has
// started, the stopped ones too.
func (s *System) logFiles() []string {
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	return files
}

// clusterLogs returns the server logs of the fault suite's brokers.
func clusterLogs() []string {
	if clusterData == "" {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(clusterData, "node*", "server.log"))
	return files
}

// brokerMarks are the broker log lines a digest keeps.
var brokerMarks = []string{"Fencing broker", "Unfencing broker", "Becoming the active controller"}

// digest returns, in time order, the WARN and ERROR lines of the services'
// JSON logs and the brokerMarks lines of the brokers' logs between from
// and to, each distinct line once with its count, at most maxDigestLines.
func digest(from, to time.Time, services, brokers []string) []string {
	type line struct {
		at   time.Time
		text string
		n    int
	}
	seen := map[string]*line{}
	add := func(at time.Time, text string) {
		if at.Before(from) || at.After(to) {
			return
		}
		if l, ok := seen[text]; ok {
			l.n++
			return
		}
		seen[text] = &line{at: at, text: text, n: 1}
	}
	for _, f := range services {
		eachLine(f, func(s string) {
			var rec map[string]any
			if json.Unmarshal([]byte(s), &rec) != nil {
				return
			}
			level, _ := rec["level"].(string)
			if level != "WARN" && level != "ERROR" {
				return
			}
			at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"]))
			if err != nil {
				return
			}
			msg, _ := rec["msg"].(string)
			text := fmt.Sprintf("%s %s: %s", rec["instance"], level, msg)
			if !strings.HasSuffix(msg, "consumer error") && !strings.HasSuffix(msg, "consumer group error") {
				// The consumers' errors repeat per partition: counted
				// once per instance, without their fields.
				for _, k := range []string{"err", "broker", "fenced", "ran", "took", "steps"} {
					v, ok := rec[k]
					if ns, isNum := v.(float64); isNum && (k == "ran" || k == "took") {
						v = time.Duration(ns).Round(time.Millisecond) // slog writes a duration in ns
					}
					if ok {
						text += fmt.Sprintf(" %s=%v", k, v)
					}
				}
			}
			add(at, text)
		})
	}
	for _, f := range brokers {
		node := filepath.Base(filepath.Dir(f))
		eachLine(f, func(s string) {
			// [2026-12-07 07:30:57,348] INFO [QuorumController id=3] Fencing broker 1 ...
			if len(s) < 25 || s[0] != '[' || !containsAny(s, brokerMarks) {
				return
			}
			at, err := time.ParseInLocation("2006-01-02 15:04:05,000", s[1:24], time.Local)
			if err != nil {
				return
			}
			add(at, node+": "+strings.TrimSpace(s[25:]))
		})
	}
	all := make([]*line, 0, len(seen))
	for _, l := range seen {
		all = append(all, l)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	var out []string
	for i, l := range all {
		if i == maxDigestLines {
			out = append(out, fmt.Sprintf("... and %d more", len(all)-i))
			break
		}
		s := fmt.Sprintf("  %s %s", l.at.UTC().Format("15:04:05.000"), l.text)
		if l.n > 1 {
			s += fmt.Sprintf(" (×%d)", l.n)
		}
		out = append(out, s)
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// eachLine calls fn with every line of file (lines of up to 1 MiB).
func eachLine(file string, fn func(string)) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}

func TestDigestKeepsWhatWasSaidDuringTheGap(t *testing.T) {
	dir := t.TempDir()
	svc := filepath.Join(dir, "command-svc-0.log")
	broker := filepath.Join(dir, "node3", "server.log")
	if err := os.MkdirAll(filepath.Dir(broker), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(file string, lines ...string) {
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(svc,
		`{"time":"2026-12-07T07:23:49.000Z","level":"WARN","msg":"before the gap","instance":"command-svc-0"}`,
		`{"time":"2026-12-07T07:23:51.586Z","level":"WARN","msg":"replacing the producer","instance":"command-svc-0","ran":4486000000,"fenced":["127.0.0.1:29192"]}`,
		`{"time":"2026-12-07T07:23:51.700Z","level":"INFO","msg":"http request","instance":"command-svc-0"}`,
		`{"time":"2026-12-07T07:23:51.750Z","level":"WARN","msg":"a transaction was slow","instance":"command-svc-0","took":5012000000,"steps":"checks 0s, begin 0s, send 5.01s","appends":3}`,
		`{"time":"2026-12-07T07:23:51.800Z","level":"WARN","msg":"kafka consumer error","instance":"command-svc-0","partition":1,"err":"broker not connected"}`,
		`{"time":"2026-12-07T07:23:51.900Z","level":"WARN","msg":"kafka consumer error","instance":"command-svc-0","partition":4,"err":"broker not connected"}`,
		`not json`,
		`{"time":"2026-12-07T07:23:59.000Z","level":"ERROR","msg":"after the gap","instance":"command-svc-0"}`,
	)
	write(broker,
		`[2026-12-07 07:23:50,870] INFO [QuorumController id=3] Fencing broker 1 at epoch 8 because its session has timed out. (org.apache.kafka.controller.ReplicationControlManager)`,
		`[2026-12-07 07:23:50,900] INFO [Broker id=3] Transitioning 45 partition(s) to local followers. (state.change.logger)`,
	)
	from := time.Date(2026, 12, 7, 7, 23, 50, 0, time.UTC)
	to := time.Date(2026, 12, 7, 7, 23, 55, 0, time.UTC)
	got := digest(from, to, []string{svc}, []string{broker})
	want := []string{
		"  07:23:50.870 node3: INFO [QuorumController id=3] Fencing broker 1 at epoch 8 because its session has timed out. (org.apache.kafka.controller.ReplicationControlManager)",
		"  07:23:51.586 command-svc-0 WARN: replacing the producer fenced=[127.0.0.1:29192] ran=4.486s",
		"  07:23:51.750 command-svc-0 WARN: a transaction was slow took=5.012s steps=checks 0s, begin 0s, send 5.01s",
		"  07:23:51.800 command-svc-0 WARN: kafka consumer error (×2)",
	}
	if time.Local.String() != "UTC" {
		// The brokers write local time; this machine's zone shifts it.
		want = want[1:]
		got = slices.DeleteFunc(got, func(s string) bool { return strings.Contains(s, "node3") })
	}
	if !slices.Equal(got, want) {
		t.Errorf("digest:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestGapIsTheLongestTimeWithoutAnAcknowledgedWrite(t *testing.T) {
	for _, tc := range []struct {
		okAt     []time.Duration
		end      time.Duration
		from, to time.Duration
	}{
		{nil, 10 * time.Second, 0, 10 * time.Second},
		{[]time.Duration{3 * time.Second, time.Second, 9 * time.Second}, 10 * time.Second, 3 * time.Second, 9 * time.Second},
		{[]time.Duration{time.Second, 2 * time.Second}, 10 * time.Second, 2 * time.Second, 10 * time.Second},
	} {
		l := &faultLoad{okAt: tc.okAt}
		if from, to := l.gap(tc.end); from != tc.from || to != tc.to {
			t.Errorf("gap of %v until %v = %v-%v; want %v-%v", tc.okAt, tc.end, from, to, tc.from, tc.to)
		}
	}
}
