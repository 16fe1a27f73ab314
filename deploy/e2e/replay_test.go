package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/deploy/bench"
	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/topology"
)

// Replay runs the replay CLI with the system's settings and returns its
// output; a non-zero exit fails the test.
func (s *System) Replay(args ...string) string {
	s.t.Helper()
	out, err := s.replay(args...)
	if err != nil {
		s.t.Fatalf("replay %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *System) replay(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "replay"), args...)
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range s.kindEnv["replay"] {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "LOG_LEVEL=warn")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	dieWithTest(cmd, 0)
	err := cmd.Run()
	s.t.Logf("replay %s:\n%s", strings.Join(args, " "), out.String())
	return out.String(), err
}

// seedEvents writes a workload of n events straight into the event log, the
// way command-svc writes them (keyed by uid, placed like the Java client),
// and returns the final state of every profile. Every fifth profile ends
// deleted. It bypasses the API because 100,000 requests would measure the
// API, not the replay.
func seedEvents(t *testing.T, s *System, n int) map[string]events.Profile {
	t.Helper()
	w, err := bench.NewEventWriter(topology.Config{Config: kafkax.Config{Brokers: strings.Split(brokers, ",")}, EventsTopic: s.env["EVENTS_TOPIC"]}, "e2e-seed", "/e2e-seed")
	if err != nil {
		t.Fatal(err)
	}
	final := map[string]events.Profile{}
	at := time.Now().Add(-time.Hour)
	for i := 0; i < n/4; i++ {
		uid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		var state events.Profile
		steps := []events.Payload{
			events.ProfileCreated{Username: fmt.Sprintf("user%d", i), Email: fmt.Sprintf("User%d@Replay.example", i)},
			events.UsernameChanged{Username: fmt.Sprintf("renamed%d", i)},
			events.EmailChanged{Email: fmt.Sprintf("moved%d@replay.example", i)},
			events.UsernameChanged{Username: fmt.Sprintf("final%d", i)},
		}
		if i%5 == 0 {
			steps[3] = events.ProfileDeleted{}
		}
		for j, data := range steps {
			e := events.New(fmt.Sprintf("%s-%d", uid, j), state, uid, data, at.Add(time.Duration(i*4+j)*time.Millisecond))
			next, err := events.Apply(state, e)
			if err != nil {
				t.Fatal(err)
			}
			state = next
			if err := w.Write(e); err != nil {
				t.Fatal(err)
			}
		}
		final[uid] = state
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return final
}

// latest reads a compacted topic and returns the decoded latest record of
// every key, tombstones as deleted profiles.
func latest(t *testing.T, c sarama.Client, topic string) map[string]events.Profile {
	t.Helper()
	out := map[string]events.Profile{}
	for _, r := range ReadTopic(t, c, topic, nil) {
		p, err := codecOfTests.DecodeSnapshot(string(r.Key), r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
		if err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		out[string(r.Key)] = p
	}
	return out
}

// Rebuild parity: 100,000 events folded into a new generation equal the
// live projection key for key, and a read load across the switch-over to
// the new generation sees no failure and no wrong answer.
func TestReplayRebuildsSnapshotsIntoANewGenerationAndSwitchesWithoutDowntime(t *testing.T) {
	const nEvents = 100_000
	s := StartSystem(t, Options{Query: 2, Partitions: 12})
	start := time.Now()
	final := seedEvents(t, s, nEvents)
	t.Logf("seeded %d events for %d profiles in %s", nEvents, len(final), time.Since(start))

	// Build generation 2 and verify it against the live one (verify waits
	// for the live projector to reach the cutoff first).
	out := s.Replay("snapshots")
	if !strings.Contains(out, "generation 2 built: 100000 events folded") {
		t.Fatalf("unexpected replay summary:\n%s", out)
	}
	out = s.Replay("verify", "-generation", "2")
	if !strings.Contains(out, "0 newer in live (changed after the cutoff), 0 different") {
		t.Fatalf("verify found differences:\n%s", out)
	}

	// Our own key-for-key comparison of the two generations' snapshots.
	c := KafkaReadCommitted(t)
	live := latest(t, c, s.env["SNAPSHOTS_TOPIC"])
	gen2 := latest(t, c, topology.GenerationName(s.env["SNAPSHOTS_TOPIC"], 2))
	if len(gen2) != len(final) {
		t.Fatalf("generation 2 has %d keys, want %d", len(gen2), len(final))
	}
	for uid, want := range final {
		got := gen2[uid]
		if got.Deleted != want.Deleted || got.Version != want.Version || (!want.Deleted && !sameJSON(got, want)) {
			t.Fatalf("generation 2 %s = %+v, want %+v", uid, got, want)
		}
		if l := live[uid]; l.Deleted != got.Deleted || l.Version != got.Version || (!got.Deleted && !sameJSON(l, got)) {
			t.Fatalf("live %s = %+v, generation 2 = %+v", uid, l, got)
		}
	}

	// A read load through the front door and every query-svc instance, with
	// the answer checked against the seeded state, runs across the switch.
	uids := make([]string, 0, len(final))
	for uid := range final {
		uids = append(uids, uid)
	}
	var reads, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	targets := append([]string{"frontdoor"}, s.Instances("query-svc")...)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				uid := uids[rand.IntN(len(uids))]
				want := final[uid]
				r := s.DoAt(targets[(w+i)%len(targets)], http.MethodGet, "/api/profile/"+uid, nil, nil)
				reads.Add(1)
				ok := false
				if want.Deleted {
					ok = r.Status == http.StatusNotFound
				} else if r.Status == http.StatusOK {
					var got profile
					ok = json.Unmarshal(r.Body, &got) == nil && got.Username == want.Username && got.Version == want.Version
				}
				if !ok {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("GET %s: %d %s", uid, r.Status, r.Body))
				}
			}
		}()
	}
	time.Sleep(time.Second)
	before := reads.Load()
	s.Replay("switch", "-generation", "2")
	// Every query-svc instance and the projector move to generation 2.
	deadline := time.Now().Add(90 * time.Second)
	for _, name := range append(s.Instances("query-svc"), s.Instances("projector")...) {
		for s.MetricOr(name, "profiles_snapshot_generation", 0) != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not move to generation 2", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d reads failed across the switch; first: %v", f, reads.Load(), firstFailure.Load())
	}
	t.Logf("%d reads across the switch (%d after it began), none failed", reads.Load(), reads.Load()-before)

	// New writes go to generation 2 and are visible.
	var p profile
	if r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "after-switch", "email": "after-switch@replay.example"}, nil); r.Status != http.StatusCreated {
		t.Fatalf("POST after the switch = %d %s", r.Status, r.Body)
	} else {
		r.JSON(t, &p)
	}
	if r := s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("GET after the switch = %d %s", r.Status, r.Body)
	}
	if got := latest(t, c, topology.GenerationName(s.env["SNAPSHOTS_TOPIC"], 2))[p.UID]; got.Username != "after-switch" {
		t.Fatalf("the write after the switch is not in generation 2: %+v", got)
	}
	var hits []profile
	s.Do(http.MethodGet, "/api/search?email=after-switch@replay.example", nil, nil).JSON(t, &hits)
	if len(hits) != 1 || hits[0].UID != p.UID {
		t.Fatalf("search after the switch = %+v", hits)
	}

	// The old generation stays until it is dropped, and then it is gone.
	if err := c.RefreshMetadata(); err != nil {
		t.Fatal(err)
	}
	if topics, _ := c.Topics(); !slices.Contains(topics, s.env["SNAPSHOTS_TOPIC"]) {
		t.Fatal("generation 1 was deleted before it was dropped")
	}
	if out, err := s.replay("drop", "-generation", "2"); err == nil {
		t.Fatalf("dropping the current generation succeeded:\n%s", out)
	}
	s.Replay("drop", "-generation", "1")
	waitFor(t, 30*time.Second, "generation 1 deleted", func() bool {
		_ = c.RefreshMetadata()
		topics, _ := c.Topics()
		return !slices.Contains(topics, s.env["SNAPSHOTS_TOPIC"]) && !slices.Contains(topics, s.env["EMAIL_INDEX_TOPIC"])
	})
	// A restarted instance comes back on generation 2 alone.
	q := s.Instances("query-svc")[0]
	s.Stop(q)
	s.Start(q)
	s.WaitReady(q)
	if r := s.DoAt(q, http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("GET after a restart on generation 2 = %d %s", r.Status, r.Body)
	}
}

// View rebuild parity: after every query-svc instance drops its Pebble view
// and re-reads it from Kafka, each answers exactly as before, for every uid
// and every email.
func TestReplayRebuildsQueryViewsThatAnswerIdentically(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Partitions: 6})
	var uids, emails []string
	for i := range 120 {
		email := fmt.Sprintf("view%d@rebuild.example", i)
		var p profile
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": fmt.Sprintf("view%d", i), "email": email}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("POST = %d %s", r.Status, r.Body)
		}
		r.JSON(t, &p)
		uids, emails = append(uids, p.UID), append(emails, email)
		switch i % 4 {
		case 1:
			s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "changed", "email": fmt.Sprintf("changed%d@Rebuild.example", i)}, nil)
			emails = append(emails, fmt.Sprintf("changed%d@rebuild.example", i))
		case 2:
			s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil)
		}
	}
	emails = append(emails, "nobody@rebuild.example")
	answers := func() map[string]string {
		out := map[string]string{}
		for _, name := range s.Instances("query-svc") {
			for _, uid := range uids {
				r := s.DoAt(name, http.MethodGet, "/api/profile/"+uid, nil, nil)
				out[name+" uid "+uid] = fmt.Sprintf("%d %s", r.Status, r.Body)
			}
			for _, email := range emails {
				r := s.DoAt(name, http.MethodGet, "/api/search?email="+email, nil, nil)
				out[name+" email "+email] = fmt.Sprintf("%d %s", r.Status, r.Body)
			}
		}
		return out
	}
	before := answers()
	readBefore := map[string]float64{}
	var urls []string
	for _, name := range s.Instances("query-svc") {
		readBefore[name] = s.Metric(name, "profiles_query_snapshot_records_read_total")
		urls = append(urls, s.URLOf(name))
	}
	out := s.Replay("views", "-query", strings.Join(urls, ","), "-progress", "200ms")
	if strings.Count(out, "rebuilt:") != len(urls) {
		t.Fatalf("not every view was rebuilt:\n%s", out)
	}
	for _, name := range s.Instances("query-svc") {
		if got := s.Metric(name, "profiles_query_snapshot_records_read_total"); got <= readBefore[name] {
			t.Fatalf("%s read nothing from Kafka during its rebuild", name)
		}
	}
	after := answers()
	if len(after) != len(before) {
		t.Fatalf("%d answers after, %d before", len(after), len(before))
	}
	for k, want := range before {
		if after[k] != want {
			t.Fatalf("%s: before the rebuild %s, after %s", k, want, after[k])
		}
	}
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// waitFor polls cond until it holds or the timeout ends.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The replay CLI answers help and unknown commands from its arguments
// alone: with no key of personal data and a broker that does not exist,
// at once, with the usage on the right stream and the right status.
func TestReplayAnswersHelpWithoutAKeyOrABroker(t *testing.T) {
	needKafka(t) // for the binaries TestMain built
	for _, tt := range []struct {
		args   []string
		code   int
		stdout bool // the usage goes to stdout (else stderr)
		want   string
	}{
		{[]string{"--help"}, 0, true, "usage: replay COMMAND"},
		{[]string{"-h"}, 0, true, "status [-json]"},
		{[]string{"help", "status"}, 0, true, "-json"},
		{[]string{"status", "-h"}, 0, false, "-json"},
		{[]string{"statsu"}, 2, false, `unknown command "statsu"`},
		{nil, 2, false, "usage: replay COMMAND"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "replay"), tt.args...)
		cmd.Env = []string{"KAFKA_BROKERS=127.0.0.1:1", "PATH=" + os.Getenv("PATH")} // no PII_KEK, no broker
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		cancel()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("replay %q: %v", tt.args, err)
		}
		out := stderr.String()
		if tt.stdout {
			out = stdout.String()
		}
		if code != tt.code || !strings.Contains(out, tt.want) || time.Since(start) > 10*time.Second {
			t.Errorf("replay %q: status %d in %s, stdout %q, stderr %q; want status %d and %q", tt.args, code,
				time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String(), tt.code, tt.want)
		}
		if strings.Contains(stderr.String(), "no PII key-encryption key") || strings.Contains(stderr.String(), "dial tcp") {
			t.Errorf("replay %q looked for a key or a broker: %s", tt.args, stderr.String())
		}
	}
}
