package ports_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/gorilla/mux"

	"profiles/events"
	"profiles/platform/auth"
	"profiles/platform/pii"
	"profiles/query-svc/internal/changes"
	"profiles/query-svc/internal/ports"
)

// fakeLog is a snapshot topic in memory: records per partition, at their
// offsets, which grow while streams read.
type fakeLog struct {
	codec   *pii.Codec // opens its records
	mu      sync.Mutex
	parts   map[int32][]*sarama.ConsumerMessage
	grew    chan struct{}
	opened  atomic.Int32
	closed  atomic.Int32
	readers atomic.Int32
}

func newFakeLog(partitions int) *fakeLog {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	l := &fakeLog{parts: map[int32][]*sarama.ConsumerMessage{}, grew: make(chan struct{}), codec: pii.NewCodec(kek, nil)}
	for p := range partitions {
		l.parts[int32(p)] = nil
	}
	return l
}

// add appends a record to partition p: a profile at version v, a tombstone
// (deleted), or garbage.
func (l *fakeLog) add(p int32, uid string, v int64, kind string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := &sarama.ConsumerMessage{Topic: "snapshots", Partition: p, Offset: int64(len(l.parts[p])), Key: []byte(uid)}
	switch kind {
	case "deleted":
		m.Headers = []*sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: fmt.Appendf(nil, "%d", v)}}
	case "garbage":
		m.Value = []byte("{garbage")
	default:
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		m.Value, _ = events.EncodeSnapshot(events.Profile{UID: uid, Username: "u", DisplayName: "u", Email: uid[:8] + "@example.com", Version: v, CreatedAt: at, UpdatedAt: at})
	}
	l.parts[p] = append(l.parts[p], m)
	close(l.grew)
	l.grew = make(chan struct{})
}

func (l *fakeLog) Open(context.Context, string) (changes.Session, error) {
	l.opened.Add(1)
	return fakeSession{l}, nil
}

type fakeSession struct{ l *fakeLog }

func (s fakeSession) Close() error { s.l.closed.Add(1); return nil }

func (s fakeSession) Bounds(context.Context) (map[int32]changes.Bounds, error) {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	out := map[int32]changes.Bounds{}
	for p, recs := range s.l.parts {
		n := int64(len(recs))
		out[p] = changes.Bounds{Oldest: 0, Stable: n, High: n}
	}
	return out, nil
}

func (s fakeSession) Read(ctx context.Context, start map[int32]int64, handle func(context.Context, int32, []changes.Record) error) error {
	s.l.readers.Add(1)
	defer s.l.readers.Add(-1)
	var wg sync.WaitGroup
	errc := make(chan error, len(start))
	for p, next := range start {
		wg.Go(func() {
			for {
				s.l.mu.Lock()
				recs := append([]*sarama.ConsumerMessage(nil), s.l.parts[p][next:]...)
				grew := s.l.grew
				s.l.mu.Unlock()
				if len(recs) > 0 {
					if err := handle(ctx, p, changes.DecodeAll(s.l.codec, recs)); err != nil {
						errc <- err
						return
					}
					next += int64(len(recs))
					continue
				}
				select {
				case <-ctx.Done():
					return
				case <-grew:
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// sseEvent is one event as a client parses it.
type sseEvent struct {
	id, event, data string
}

// sseClient reads events (and counts comments) from a stream.
type sseClient struct {
	resp     *http.Response
	cancel   context.CancelFunc
	events   chan sseEvent
	comments atomic.Int32
	done     chan struct{}
}

func openStream(t *testing.T, url string, header map[string]string) (*sseClient, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		return nil, resp
	}
	c := &sseClient{resp: resp, cancel: cancel, events: make(chan sseEvent, 1000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.id != "" || len(data) > 0 {
					ev.data = strings.Join(data, "\n")
					c.events <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, ":"):
				c.comments.Add(1)
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	t.Cleanup(c.close)
	return c, resp
}

func (c *sseClient) close() {
	c.cancel()
	c.resp.Body.Close()
	<-c.done
}

func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sseEvent{}
}

// ended reports whether the server ended the stream within d.
func (c *sseClient) ended(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

type changesServer struct {
	url  string
	h    *ports.Changes
	gen  atomic.Int32
	stop chan struct{}
	log  *fakeLog
}

func newChangesServer(t *testing.T, l *fakeLog, max int, tweak func(*ports.Changes)) *changesServer {
	t.Helper()
	s := &changesServer{stop: make(chan struct{}), log: l}
	s.gen.Store(1)
	s.h = &ports.Changes{
		Source:     l,
		Generation: func() int { return int(s.gen.Load()) },
		Topic:      func(n int) string { return fmt.Sprintf("snapshots.v%d", n) },
		Max:        max,
		Stop:       s.stop,
		Instance:   "query-svc-0",
		Log:        slog.New(slog.DiscardHandler),
	}
	if tweak != nil {
		tweak(s.h)
	}
	r := mux.NewRouter()
	s.h.Register(r)
	srv := httptest.NewUnstartedServer(r)
	// A write timeout far below the stream's life: the stream must lift it.
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/api/changes"
	return s
}

const uid2 = "00000000-0000-4000-8000-000000000002"

func TestChangesRejects(t *testing.T) {
	l := newFakeLog(2)
	l.add(0, uid, 1, "")
	s := newChangesServer(t, l, 10, nil)
	tests := []struct {
		name   string
		query  string
		header map[string]string
		gen    int32
		status int
		typ    string
	}{
		{"no generation yet", "", nil, 0, 503, "urn:profiles:problem:not-ready"},
		{"malformed Last-Event-ID", "", map[string]string{"Last-Event-ID": "nope"}, 1, 400, "urn:profiles:problem:invalid-last-event-id"},
		{"malformed lastEventId", "?lastEventId=g1:0=-1", nil, 1, 400, "urn:profiles:problem:invalid-last-event-id"},
		{"header wins over the query", "?lastEventId=g1:0=0,1=0", map[string]string{"Last-Event-ID": "g1:0"}, 1, 400, "urn:profiles:problem:invalid-last-event-id"},
		{"beyond the end", "", map[string]string{"Last-Event-ID": "g1:0=2,1=0"}, 1, 400, "urn:profiles:problem:invalid-last-event-id"},
		{"unknown partition", "", map[string]string{"Last-Event-ID": "g1:0=0,5=0"}, 1, 400, "urn:profiles:problem:invalid-last-event-id"},
		{"bad from", "?from=end", nil, 1, 400, "urn:profiles:problem:invalid-parameter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.gen.Store(tt.gen)
			_, resp := openStream(t, s.url+tt.query, tt.header)
			defer resp.Body.Close()
			var p struct {
				Type   string `json:"type"`
				Status int    `json:"status"`
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
				json.Unmarshal(b, &p) != nil || p.Type != tt.typ || p.Status != tt.status {
				t.Fatalf("%d %s %s; want %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), b, tt.status, tt.typ)
			}
			if tt.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
	if n := s.h.Open(); n != 0 {
		t.Fatalf("%d streams counted open after rejections", n)
	}
}

func decodeChange(t *testing.T, ev sseEvent) changes.Change {
	t.Helper()
	var c changes.Change
	if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
		t.Fatalf("event %+v: %v", ev, err)
	}
	return c
}

func TestChangesStream(t *testing.T) {
	l := newFakeLog(2)
	l.add(0, uid, 1, "")
	s := newChangesServer(t, l, 10, func(h *ports.Changes) { h.Heartbeat = 50 * time.Millisecond })

	t.Run("from the end: live changes only", func(t *testing.T) {
		c, _ := openStream(t, s.url, nil)
		if ct := c.resp.Header.Get("Content-Type"); ct != "text/event-stream" || c.resp.Header.Get("X-Served-By") != "query-svc-0" {
			t.Fatalf("Content-Type %q, X-Served-By %q", ct, c.resp.Header.Get("X-Served-By"))
		}
		ready := c.next(t)
		if ready.event != "ready" || ready.id != "g1:0=1,1=0" || ready.data != `{"generation":1,"from":"end"}` {
			t.Fatalf("first event %+v", ready)
		}
		l.add(1, uid2, 1, "")
		ev := c.next(t)
		ch := decodeChange(t, ev)
		if ev.event != "profile" || ev.id != "g1:0=1,1=1" || ch.UID != uid2 || ch.Version != 1 || ch.Deleted ||
			ch.Profile == nil || ch.Profile.UID != uid2 || ch.Partition != 1 || ch.Offset != 0 {
			t.Fatalf("event %+v", ev)
		}
		// Undecodable records are skipped, and the position moves past them.
		l.add(0, uid, 2, "garbage")
		l.add(0, uid, 2, "deleted")
		ev = c.next(t)
		ch = decodeChange(t, ev)
		if ev.event != "deleted" || ev.id != "g1:0=3,1=1" || !ch.Deleted || ch.Profile != nil || ch.Version != 2 || ch.Offset != 2 {
			t.Fatalf("event %+v", ev)
		}
		if !strings.Contains(ev.data, `"profile":null`) {
			t.Fatalf("data %s", ev.data)
		}
		// Heartbeats keep coming, past the server's write timeout.
		time.Sleep(500 * time.Millisecond)
		if c.comments.Load() < 3 || c.ended(0) {
			t.Fatalf("%d heartbeats; ended %v", c.comments.Load(), c.ended(0))
		}
	})

	t.Run("from the beginning", func(t *testing.T) {
		c, _ := openStream(t, s.url+"?from=beginning", nil)
		if ready := c.next(t); ready.id != "g1:0=0,1=0" || ready.data != `{"generation":1,"from":"beginning"}` {
			t.Fatalf("first event %+v", ready)
		}
		got := map[string]bool{}
		for range 3 { // 4 records, one of them garbage
			ev := c.next(t)
			ch := decodeChange(t, ev)
			got[fmt.Sprintf("%d/%d", ch.Partition, ch.Offset)] = true
		}
		if len(got) != 3 || !got["0/0"] || !got["0/2"] || !got["1/0"] {
			t.Fatalf("events at %v", got)
		}
	})
}

// A client that disconnects and reconnects with its last id, to another
// instance, misses no change and sees none twice.
func TestChangesResume(t *testing.T) {
	l := newFakeLog(3)
	a := newChangesServer(t, l, 10, nil)
	b := newChangesServer(t, l, 10, nil) // another instance, same topic
	c, _ := openStream(t, a.url, nil)
	lastID := c.next(t).id
	seen := map[string]int{}
	var order []changes.Change
	write := func(from, to int) {
		for i := from; i < to; i++ {
			l.add(int32(i%3), fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), 1, "")
		}
	}
	write(0, 30)
	for range 30 {
		ev := c.next(t)
		ch := decodeChange(t, ev)
		seen[ch.UID]++
		order = append(order, ch)
		lastID = ev.id
		if len(order) == 12 {
			break
		}
	}
	c.close()
	write(30, 60) // while disconnected
	c2, _ := openStream(t, b.url, map[string]string{"Last-Event-ID": lastID})
	if ready := c2.next(t); ready.id != lastID || ready.data != `{"generation":1,"from":"last-event-id"}` {
		t.Fatalf("resumed at %+v, want id %s", ready, lastID)
	}
	write(60, 90)
	for len(order) < 90 {
		ch := decodeChange(t, c2.next(t))
		seen[ch.UID]++
		order = append(order, ch)
	}
	for i := range 90 {
		if u := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i); seen[u] != 1 {
			t.Fatalf("%s seen %d times", u, seen[u])
		}
	}
	// Per partition, in offset order.
	next := map[int32]int64{}
	for _, ch := range order {
		if ch.Offset != next[ch.Partition] {
			t.Fatalf("partition %d: offset %d, want %d", ch.Partition, ch.Offset, next[ch.Partition])
		}
		next[ch.Partition]++
	}
	if c2.ended(200 * time.Millisecond) {
		t.Fatal("the resumed stream ended")
	}

	// An id of another generation starts that generation from its
	// beginning, and says so.
	c3, _ := openStream(t, a.url, map[string]string{"Last-Event-ID": "g7:0=1"})
	if ready := c3.next(t); ready.id != "g1:0=0,1=0,2=0" || ready.data != `{"generation":1,"from":"reset"}` {
		t.Fatalf("first event %+v", ready)
	}
	// ?lastEventId= for clients that cannot set headers.
	c4, _ := openStream(t, a.url+"?lastEventId="+lastID, nil)
	if ready := c4.next(t); ready.id != lastID {
		t.Fatalf("first event %+v, want id %s", ready, lastID)
	}
}

func TestChangesLimitAndEnds(t *testing.T) {
	l := newFakeLog(1)
	s := newChangesServer(t, l, 2, nil)
	c1, _ := openStream(t, s.url, nil)
	c1.next(t)
	c2, _ := openStream(t, s.url, nil)
	c2.next(t)
	if n := s.h.Open(); n != 2 {
		t.Fatalf("%d open, want 2", n)
	}
	_, resp := openStream(t, s.url, nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "too-many-streams") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream: %d %s", resp.StatusCode, b)
	}

	// A client that goes frees its place.
	c1.close()
	waitFor(t, func() bool { return s.h.Open() == 1 })
	c3, _ := openStream(t, s.url, nil)
	c3.next(t)

	// A generation change ends the streams (their clients reconnect into
	// the new generation).
	s.gen.Store(2)
	if !c2.ended(3*time.Second) || !c3.ended(time.Second) {
		t.Fatal("streams outlived their generation")
	}
	waitFor(t, func() bool { return s.h.Open() == 0 })

	// Stop (the service's shutdown) ends every stream at once.
	c4, _ := openStream(t, s.url, nil)
	c4.next(t)
	close(s.stop)
	if !c4.ended(time.Second) {
		t.Fatal("a stream outlived Stop")
	}
	waitFor(t, func() bool { return s.h.Open() == 0 && l.readers.Load() == 0 && l.opened.Load() == l.closed.Load() })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A stream lives no longer than the token that opened it.
func TestChangesEndWhenTheTokenExpires(t *testing.T) {
	l := newFakeLog(1)
	h := &ports.Changes{
		Source: l, Generation: func() int { return 1 }, Topic: func(n int) string { return fmt.Sprintf("snapshots.v%d", n) },
		Max: 10, Instance: "query-svc-0", Log: slog.New(slog.DiscardHandler),
	}
	r := mux.NewRouter()
	r.Use(func(next http.Handler) http.Handler { // stands in for the auth middleware
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			p := auth.Principal{Kind: auth.KindToken, Subject: "reader", Scopes: []string{auth.ScopeRead}, Expires: time.Now().Add(time.Second)}
			next.ServeHTTP(w, req.WithContext(auth.WithPrincipal(req.Context(), p)))
		})
	})
	h.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	c, _ := openStream(t, srv.URL+"/api/changes", nil)
	if ev := c.next(t); ev.event != "ready" {
		t.Fatalf("first event %+v", ev)
	}
	if !c.ended(30 * time.Second) {
		t.Fatal("the stream outlived its token")
	}
	waitFor(t, func() bool { return h.Open() == 0 })
}
