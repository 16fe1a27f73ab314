package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"profiles/events"
)

// burstAnswer is what one request of a burst got.
type burstAnswer struct {
	req     *http.Request
	status  int
	header  http.Header
	body    []byte
	latency time.Duration
	err     error
}

// problemType returns the type of a problem answer ("" if it is none).
func (a burstAnswer) problemType() string {
	var p struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(a.body, &p)
	return p.Type
}

// burst sends every request at once (released together once all are
// ready), each on a connection of its own, and returns the answers in
// the order of reqs. A request that gets no answer within timeout has
// err set.
func burst(s *System, reqs []*http.Request, bodies [][]byte, timeout time.Duration) []burstAnswer {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: len(reqs)}}
	defer client.CloseIdleConnections()
	out := make([]burstAnswer, len(reqs))
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i, req := range reqs {
		if bodies[i] != nil {
			s.remember(bodies[i], nil) // no service may log them (checkLogs)
		}
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			t0 := time.Now()
			resp, err := client.Do(req)
			a := burstAnswer{req: req, err: err}
			if err == nil {
				a.status, a.header = resp.StatusCode, resp.Header
				a.body, a.err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			a.latency = time.Since(t0)
			out[i] = a
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return out
}

// newJSONRequest returns a request to the front door with a JSON body.
func newJSONRequest(t *testing.T, s *System, method, path string, body []byte, header map[string]string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return req
}

// burstStats sums up a burst's answers: counts by outcome (the status, and
// the problem type of a 503), the slowest answer of each, and how many
// overloaded answers came from a forward.
type burstStats struct {
	count              map[string]int
	slowest            map[string]time.Duration
	forwardedOverloads int
}

func (b burstStats) String() string {
	keys := make([]string, 0, len(b.count))
	for k := range b.count {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out string
	for _, k := range keys {
		out += fmt.Sprintf("%s: %d (slowest %v); ", k, b.count[k], b.slowest[k].Round(time.Millisecond))
	}
	return out + fmt.Sprintf("overloaded after a forward: %d", b.forwardedOverloads)
}

const (
	typeOverloaded = "urn:profiles:problem:overloaded"
	// typeUnavailable and typePartitionUnavailable are the other 503s a
	// write may get (see the OpenAPI document's Unavailable response).
	typeUnavailable          = "urn:profiles:problem:unavailable"
	typePartitionUnavailable = "urn:profiles:problem:partition-unavailable"
)

// checkBurst fails the test for every answer that is not a documented
// one within bound: one of ok, or 503 with a positive Retry-After and a
// documented problem type. It checks every answer against the OpenAPI
// document too.
func checkBurst(t *testing.T, s *System, answers []burstAnswer, bound time.Duration, ok ...int) burstStats {
	t.Helper()
	st := burstStats{count: map[string]int{}, slowest: map[string]time.Duration{}}
	for i, a := range answers {
		if a.err != nil {
			t.Errorf("request %d got no answer after %v: %v", i, a.latency, a.err)
			continue
		}
		s.spec.check(t, a.req, Response{Status: a.status, Header: a.header, Body: a.body})
		key := strconv.Itoa(a.status)
		switch {
		case slices.Contains(ok, a.status):
		case a.status == http.StatusServiceUnavailable:
			typ := a.problemType()
			key += " " + typ
			if typ != typeOverloaded && typ != typeUnavailable && typ != typePartitionUnavailable {
				t.Errorf("request %d: 503 of an undocumented type: %s", i, a.body)
			}
			if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("request %d: 503 with Retry-After %q", i, a.header.Get("Retry-After"))
			}
			if typ == typeOverloaded && a.header.Get("X-Profiles-Hops") == "1" {
				st.forwardedOverloads++
			}
		default:
			t.Errorf("request %d: %d %s", i, a.status, a.body)
		}
		st.count[key]++
		st.slowest[key] = max(st.slowest[key], a.latency)
		if a.latency > bound {
			t.Errorf("request %d took %v (%d), more than %v", i, a.latency, a.status, bound)
		}
	}
	return st
}

// A burst of concurrent writes far beyond a small MAX_INFLIGHT_WRITES (the
// same burst without a bound is absorbed within about two seconds here;
// the default bound is 1024): every write is answered within a bound, as a
// success or as 503 with Retry-After, most of the refused ones at once
// as overloaded (also when the write was forwarded to its owner); every
// acknowledged write is in the event log and readable, and no write
// refused as overloaded is in the log. First a burst of POSTs (half with
// an Idempotency-Key, whose retry then creates the profile), then a burst
// of PUTs, three at a time on each profile created.
func TestOverloadBurstIsRefusedAtOnceAndLosesNothing(t *testing.T) {
	const (
		partitions = 4
		limit      = 16
		posts      = 600
		putsPer    = 3
		maxPuts    = 600
		// An admitted write waits at most APPEND_TIMEOUT for the event
		// log and VISIBILITY_TIMEOUT for readers; bound adds a margin for
		// a shared machine. The client gives up (and the test fails)
		// only later.
		appendTimeout, visibilityTimeout = 5 * time.Second, 5 * time.Second
		bound                            = appendTimeout + visibilityTimeout + 5*time.Second
		clientTimeout                    = 30 * time.Second
	)
	began := time.Now()
	s := StartSystem(t, Options{Command: 2, Partitions: partitions, Env: map[string]string{
		"MAX_INFLIGHT_WRITES": strconv.Itoa(limit),
		"APPEND_TIMEOUT":      appendTimeout.String(),
		"VISIBILITY_TIMEOUT":  visibilityTimeout.String(),
	}})
	commands := s.Instances("command-svc")
	for _, c := range commands {
		if got := s.Metric(c, "profiles_command_writes_in_flight_limit"); got != limit {
			t.Fatalf("%s: profiles_command_writes_in_flight_limit = %v, want %d", c, got, limit)
		}
	}
	run := fmt.Sprintf("%06d", rand.IntN(1e6))
	t.Logf("system ready after %v", time.Since(began).Round(time.Millisecond))

	// The POSTs: unique usernames and emails, so that the log tells which
	// were written.
	type post struct{ username, email, key string }
	sent := make([]post, posts)
	reqs := make([]*http.Request, posts)
	bodies := make([][]byte, posts)
	for i := range sent {
		p := post{username: fmt.Sprintf("overload-%s-%d", run, i), email: fmt.Sprintf("overload-%s-%d@burst.example", run, i)}
		header := map[string]string{}
		if i%2 == 0 {
			p.key = fmt.Sprintf("overload-%s-%d", run, i)
			header["Idempotency-Key"] = p.key
		}
		sent[i] = p
		bodies[i], _ = json.Marshal(map[string]string{"username": p.username, "email": p.email})
		reqs[i] = newJSONRequest(t, s, http.MethodPost, "/api/profile", bodies[i], header)
	}
	t0 := time.Now()
	answers := burst(s, reqs, bodies, clientTimeout)
	stats := checkBurst(t, s, answers, bound, http.StatusCreated, http.StatusAccepted)
	t.Logf("%d concurrent POSTs answered in %v: %s", posts, time.Since(t0).Round(time.Millisecond), stats)
	if stats.count["503 "+typeOverloaded] == 0 {
		t.Fatalf("no POST of the burst was refused as overloaded: %s", stats)
	}
	if stats.forwardedOverloads == 0 {
		t.Errorf("no overloaded answer came through a forward to the owner: %s", stats)
	}
	// Refused at once: sooner than APPEND_TIMEOUT, the longest an
	// admitted write may wait for the event log.
	if slowest := stats.slowest["503 "+typeOverloaded]; slowest >= appendTimeout {
		t.Errorf("the slowest overloaded answer took %v, not less than APPEND_TIMEOUT (%v)", slowest, appendTimeout)
	}
	if t.Failed() {
		return
	}

	// The log against the answers.
	state, log := readEventLog(t, s)
	byEmail := map[string]events.Profile{}
	for _, p := range state {
		byEmail[p.Email] = p
	}
	var created []string // uids acknowledged
	var refusedWithKey []int
	for i, a := range answers {
		switch {
		case a.status == http.StatusCreated || a.status == http.StatusAccepted:
			var got struct {
				UID string `json:"uid"`
			}
			if err := json.Unmarshal(a.body, &got); err != nil || got.UID == "" {
				t.Fatalf("POST %d answered %d without a uid: %s", i, a.status, a.body)
			}
			if p, ok := state[got.UID]; !ok || p.Email != sent[i].email || p.Username != sent[i].username || p.Version != 1 {
				t.Errorf("acknowledged POST %d (%d, uid %s) is not in the event log as sent: %+v", i, a.status, got.UID, p)
			}
			created = append(created, got.UID)
		case a.problemType() == typeOverloaded:
			if p, ok := byEmail[sent[i].email]; ok {
				t.Errorf("POST %d was refused as overloaded, but the event log holds it: %+v", i, p)
			}
			if sent[i].key != "" {
				refusedWithKey = append(refusedWithKey, i)
			}
		}
	}
	if len(log) < len(created) {
		t.Errorf("the event log holds %d events; %d POSTs were acknowledged", len(log), len(created))
	}
	for _, uid := range created {
		if r := s.Do(http.MethodGet, "/api/profile/"+uid+"?minVersion=1", nil, nil); r.Status != http.StatusOK {
			t.Errorf("GET of acknowledged %s = %d %s", uid, r.Status, r.Body)
		}
	}
	// A refused POST left nothing behind: its retry with the same
	// Idempotency-Key creates the profile (no replay of an earlier one).
	for _, i := range refusedWithKey[:min(len(refusedWithKey), 10)] {
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": sent[i].username, "email": sent[i].email},
			map[string]string{"Idempotency-Key": sent[i].key})
		if r.Status != http.StatusCreated || r.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("retry of refused POST %d = %d (Idempotent-Replayed %q) %s; want a 201 that creates it", i, r.Status, r.Header.Get("Idempotent-Replayed"), r.Body)
		}
	}
	checkAdmissionMetrics(t, s, stats.count["503 "+typeOverloaded])

	// The PUTs: each profile created gets putsPer concurrent changes of
	// its username, which queue on its lock, so they count against the
	// bound too.
	type put struct{ uid, username string }
	var puts []put
	reqs, bodies = nil, nil
	for k, uid := range created {
		for j := range putsPer {
			if len(puts) == maxPuts {
				break
			}
			p := put{uid: uid, username: fmt.Sprintf("changed-%s-%d-%d", run, k, j)}
			body, _ := json.Marshal(map[string]string{"username": p.username, "email": state[uid].Email})
			puts = append(puts, p)
			bodies = append(bodies, body)
			reqs = append(reqs, newJSONRequest(t, s, http.MethodPut, "/api/profile/"+uid, body, nil))
		}
	}
	t0 = time.Now()
	answers = burst(s, reqs, bodies, clientTimeout)
	putStats := checkBurst(t, s, answers, bound, http.StatusOK, http.StatusAccepted)
	t.Logf("%d concurrent PUTs (%d per profile) answered in %v: %s", len(puts), putsPer, time.Since(t0).Round(time.Millisecond), putStats)
	if t.Failed() {
		return
	}
	_, log = readEventLog(t, s)
	changedTo := map[string]map[string]bool{} // uid -> usernames in the log
	for _, e := range log {
		if c, ok := e.Data.(events.UsernameChanged); ok {
			if changedTo[e.UID] == nil {
				changedTo[e.UID] = map[string]bool{}
			}
			changedTo[e.UID][c.Username] = true
		}
	}
	acked := 0
	for i, a := range answers {
		inLog := changedTo[puts[i].uid][puts[i].username]
		switch {
		case a.status == http.StatusOK || a.status == http.StatusAccepted:
			acked++
			if !inLog {
				t.Errorf("acknowledged PUT %d (%d) of %s to %s is not in the event log", i, a.status, puts[i].uid, puts[i].username)
			}
		case a.problemType() == typeOverloaded && inLog:
			t.Errorf("PUT %d of %s to %s was refused as overloaded, but the event log holds it", i, puts[i].uid, puts[i].username)
		}
	}
	if acked == 0 {
		t.Errorf("no PUT of the burst was acknowledged: %s", putStats)
	}
	checkAdmissionMetrics(t, s, stats.count["503 "+typeOverloaded]+putStats.count["503 "+typeOverloaded])
	t.Logf("test took %v", time.Since(began).Round(time.Millisecond))
}

// readEventLog reads the whole event log of s, read_committed, and returns
// its fold (every profile's state by uid) and its events in log order of
// each partition.
func readEventLog(t *testing.T, s *System) (map[string]events.Profile, []events.Event) {
	t.Helper()
	state := map[string]events.Profile{}
	var log []events.Event
	for _, m := range ReadTopic(t, KafkaAt(t, s.Brokers, true), s.env["EVENTS_TOPIC"], nil) {
		e, err := codecOfTests.DecodeEvent(m.Value)
		if err != nil {
			t.Fatalf("undecodable event at %d/%d: %v", m.Partition, m.Offset, err)
		}
		next, err := events.Apply(state[e.UID], e)
		if err != nil {
			t.Fatalf("event %s v%d does not fold: %v", e.UID, e.Version, err)
		}
		state[e.UID] = next
		log = append(log, e)
	}
	return state, log
}

// checkAdmissionMetrics checks the admission metrics of the command-svc
// instances, summed: as many refusals counted as overloaded answers seen,
// and no write in flight once all are answered.
func checkAdmissionMetrics(t *testing.T, s *System, overloaded int) {
	t.Helper()
	var refused, inFlight float64
	for _, c := range s.Instances("command-svc") {
		refused += s.MetricOr(c, `profiles_command_write_admissions_total{result="overloaded"}`, 0)
		inFlight += s.Metric(c, "profiles_command_writes_in_flight")
	}
	if int(refused) != overloaded || inFlight != 0 {
		t.Errorf("metrics: %v writes refused as overloaded (want %d), %v in flight (want 0)", refused, overloaded, inFlight)
	}
}
