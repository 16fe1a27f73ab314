package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/events"
	"profiles/platform/kafkax"
)

// sseEvent is one Server-Sent Event as a client parses it.
type sseEvent struct {
	ID, Event, Data string
}

// changeData is the data of a profile or deleted event.
type changeData struct {
	UID       string          `json:"uid"`
	Version   int64           `json:"version"`
	Deleted   bool            `json:"deleted"`
	Profile   json.RawMessage `json:"profile"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
}

// sseStream is an open GET /api/changes, read with a client of its own (a
// stream never ends, so s.Do cannot read it).
type sseStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	done   chan struct{}
}

// openChanges opens the change stream at base (the front door or an
// instance), with Last-Event-ID if lastID is not empty, and fails unless
// it answers 200 with text/event-stream.
func openChanges(t *testing.T, base, query, lastID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/changes"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream stays open
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s/api/changes%s = %d %s", base, query, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	st := &sseStream{resp: resp, cancel: cancel, events: make(chan sseEvent, 10000), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		defer close(st.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch {
			case line == "":
				if ev.ID != "" || len(data) > 0 {
					ev.Data = strings.Join(data, "\n")
					st.events <- ev
				}
				ev, data = sseEvent{}, nil
			case field == "": // a comment (heartbeat)
			case field == "id":
				ev.ID = value
			case field == "event":
				ev.Event = value
			case field == "data":
				data = append(data, value)
			}
		}
	}()
	t.Cleanup(st.Close)
	return st
}

// Close disconnects the client.
func (st *sseStream) Close() {
	st.cancel()
	st.resp.Body.Close()
	<-st.done
}

// Next returns the next event, failing after timeout.
func (st *sseStream) Next(t *testing.T, timeout time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-st.events:
		if !ok {
			t.Fatal("the change stream ended")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no change event within %s", timeout)
	}
	return sseEvent{}
}

// positionOf parses an event id, "g<generation>:<p>=<next offset>,...".
func positionOf(t *testing.T, id string) (int, map[int32]int64) {
	t.Helper()
	g, parts, ok := strings.Cut(id, ":")
	gen, err := strconv.Atoi(strings.TrimPrefix(g, "g"))
	if !ok || err != nil {
		t.Fatalf("event id %q", id)
	}
	next := map[int32]int64{}
	for item := range strings.SplitSeq(parts, ",") {
		ps, os, _ := strings.Cut(item, "=")
		p, err1 := strconv.ParseInt(ps, 10, 32)
		o, err2 := strconv.ParseInt(os, 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("event id %q", id)
		}
		next[int32(p)] = o
	}
	return gen, next
}

// An SSE client that disconnects mid-way and reconnects with Last-Event-ID
// to another query-svc instance misses no change and sees none twice: the
// union of what both connections delivered is exactly the records the
// snapshot topic got after the stream started, each once, in version
// order per profile.
func TestChangesStreamResumesWithoutLossOrDuplicates(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Partitions: 4})
	topic := s.env["SNAPSHOTS_TOPIC"] // generation 1

	// Errors are problem+json, as the document says.
	for _, tt := range []struct {
		query  string
		header map[string]string
	}{
		{"", map[string]string{"Last-Event-ID": "not-a-position"}},
		{"?lastEventId=g1:0=-4", nil},
		{"?from=yesterday", nil},
		{"", map[string]string{"Last-Event-ID": "g1:0=0,99=0"}}, // a partition the topic does not have
	} {
		if r := s.Do(http.MethodGet, "/api/changes"+tt.query, nil, tt.header); r.Status != http.StatusBadRequest {
			t.Fatalf("GET /api/changes%s %v = %d %s, want 400", tt.query, tt.header, r.Status, r.Body)
		}
	}

	// The first connection, through the front door, starts at the end.
	first := openChanges(t, s.URL, "", "")
	ready := first.Next(t, 10*time.Second)
	if ready.Event != "ready" || !strings.Contains(ready.Data, `"from":"end"`) {
		t.Fatalf("first event %+v", ready)
	}
	gen, start := positionOf(t, ready.ID)
	if gen != 1 || len(start) != 4 {
		t.Fatalf("start position %q", ready.ID)
	}
	servedBy := first.resp.Header.Get("X-Served-By")
	other := "query-svc-0"
	if servedBy == other {
		other = "query-svc-1"
	}

	// ~300 writes through the API, concurrently: creates, username and
	// email changes, deletes.
	const actors = 64
	var writes atomic.Int64
	workload := make(chan struct{})
	go func() {
		defer close(workload)
		parallel(actors, 8, func(i int) {
			write := func(method, path string, body any, want int) string {
				r := s.Do(method, path, body, nil)
				if r.Status != want {
					t.Errorf("%s %s = %d %s", method, path, r.Status, r.Body)
					return ""
				}
				writes.Add(1)
				var p profile
				if len(r.Body) > 0 {
					r.JSON(t, &p)
				}
				return p.UID
			}
			uid := write(http.MethodPost, "/api/profile", map[string]string{"username": fmt.Sprintf("sse-%d", i), "email": fmt.Sprintf("sse-%d@mail.com", i)}, http.StatusCreated)
			if uid == "" {
				return
			}
			path := "/api/profile/" + uid
			write(http.MethodPut, path, map[string]string{"username": fmt.Sprintf("sse-%d-b", i), "email": fmt.Sprintf("sse-%d@mail.com", i)}, http.StatusOK)
			write(http.MethodPut, path, map[string]string{"username": fmt.Sprintf("sse-%d-b", i), "email": fmt.Sprintf("sse-%d-b@mail.com", i)}, http.StatusOK)
			write(http.MethodPut, path, map[string]string{"username": fmt.Sprintf("sse-%d-c", i), "email": fmt.Sprintf("sse-%d-c@mail.com", i)}, http.StatusOK)
			if i%2 == 0 {
				write(http.MethodDelete, path, nil, http.StatusNoContent)
			}
		})
	}()

	type seen struct {
		changeData
		event string
		conn  int
	}
	var (
		mu  sync.Mutex
		got []seen
	)
	collect := func(st *sseStream, conn int, ev sseEvent) string {
		if ev.Event != "profile" && ev.Event != "deleted" {
			t.Fatalf("connection %d: event %+v", conn, ev)
		}
		var c changeData
		if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
			t.Fatalf("connection %d: event %+v: %v", conn, ev, err)
		}
		mu.Lock()
		got = append(got, seen{c, ev.Event, conn})
		mu.Unlock()
		return ev.ID
	}

	// Disconnect mid-way.
	lastID := ready.ID
	for range 100 {
		lastID = collect(first, 1, first.Next(t, 30*time.Second))
	}
	first.Close()
	atClose := writes.Load()
	waitFor(t, 60*time.Second, "writes while the client is away", func() bool { return writes.Load() >= atClose+20 })

	// Reconnect with the last id, to the other query-svc instance directly.
	atReconnect := writes.Load()
	second := openChanges(t, s.URLOf(other), "", lastID)
	resumed := second.Next(t, 10*time.Second)
	if resumed.Event != "ready" || resumed.ID != lastID || !strings.Contains(resumed.Data, `"from":"last-event-id"`) {
		t.Fatalf("resumed with %q: first event %+v", lastID, resumed)
	}
	if served := second.resp.Header.Get("X-Served-By"); served != other {
		t.Fatalf("second connection served by %q, want %s", served, other)
	}
	<-workload
	if t.Failed() {
		return
	}
	t.Logf("%d writes; the first connection was served by %s; %d writes while disconnected", writes.Load(), servedBy, atReconnect-atClose)

	// Read the stream until it has delivered everything the topic holds.
	c := KafkaReadCommitted(t)
	var pos map[int32]int64
	_, pos = positionOf(t, lastID)
	caughtUp := func() bool {
		for {
			select {
			case ev, ok := <-second.events:
				if !ok {
					t.Fatal("the second connection ended")
				}
				_, pos = positionOf(t, collect(second, 2, ev))
				continue
			case <-time.After(200 * time.Millisecond):
			}
			break
		}
		for p := range int32(4) {
			if !ReadToEnd(t, c, topic, p, pos[p]) {
				return false
			}
		}
		return true
	}
	waitFor(t, 60*time.Second, "the stream to deliver the whole topic", caughtUp)

	// What the topic got after the stream started, by partition and offset.
	type key struct {
		p   int32
		off int64
	}
	want := map[key]changeData{}
	for _, m := range ReadTopic(t, c, topic, nil) {
		if m.Offset < start[m.Partition] {
			continue
		}
		prof, err := codecOfTests.DecodeSnapshot(string(m.Key), m.Value, kafkax.HeaderValue(m, events.HeaderVersion))
		if err != nil {
			t.Fatalf("snapshot record %d/%d: %v", m.Partition, m.Offset, err)
		}
		want[key{m.Partition, m.Offset}] = changeData{UID: prof.UID, Version: prof.Version, Deleted: prof.Deleted}
	}
	if len(want) < 250 {
		t.Fatalf("the topic got only %d records after the stream started", len(want))
	}

	byRecord := map[key]int{}
	byVersion := map[string]int{}
	lastVersion := map[string]int64{}
	perConn := map[int]int{}
	for _, g := range got {
		k := key{g.Partition, g.Offset}
		byRecord[k]++
		byVersion[fmt.Sprintf("%s@%d", g.UID, g.Version)]++
		perConn[g.conn]++
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("event %+v is no record of the topic after the start", g.changeData)
		case w.UID != g.UID || w.Version != g.Version || w.Deleted != g.Deleted:
			t.Errorf("event %+v, the record holds %+v", g.changeData, w)
		case g.Deleted != (g.event == "deleted") || g.Deleted != (string(g.Profile) == "null"):
			t.Errorf("event %q %+v", g.event, g.changeData)
		}
		if g.Version <= lastVersion[g.UID] {
			t.Errorf("%s: version %d after version %d", g.UID, g.Version, lastVersion[g.UID])
		}
		lastVersion[g.UID] = g.Version
	}
	for k, n := range byRecord {
		if n != 1 {
			t.Errorf("record %d/%d delivered %d times", k.p, k.off, n)
		}
	}
	for v, n := range byVersion {
		if n != 1 {
			t.Errorf("%s delivered %d times", v, n)
		}
	}
	for k, w := range want {
		if byRecord[k] == 0 {
			t.Errorf("record %d/%d (%s version %d) never delivered", k.p, k.off, w.UID, w.Version)
		}
	}
	t.Logf("%d records, %d events on the first connection, %d on the second", len(want), perConn[1], perConn[2])

	// An id of another generation starts this one from its beginning.
	reset := openChanges(t, s.URLOf(servedBy), "", "g7:0=12")
	if ev := reset.Next(t, 10*time.Second); ev.Event != "ready" || ev.ID != "g1:0=0,1=0,2=0,3=0" || !strings.Contains(ev.Data, `"from":"reset"`) {
		t.Fatalf("first event after an id of another generation: %+v", ev)
	}
	if ev := reset.Next(t, 10*time.Second); ev.Event != "profile" {
		t.Fatalf("the reset stream starts with %+v", ev)
	}
	reset.Close()
	second.Close()

	// A graceful shutdown ends open streams at once, rather than waiting
	// SHUTDOWN_GRACE (15s) for them.
	open := openChanges(t, s.URLOf(other), "", "")
	open.Next(t, 10*time.Second)
	began := time.Now()
	s.Stop(other)
	took := time.Since(began)
	if took > 10*time.Second {
		t.Fatalf("%s took %s to stop with a stream open", other, took)
	}
	t.Logf("%s stopped in %s with a stream open", other, took.Round(time.Millisecond))
	select {
	case <-open.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived its instance")
	}

	// Metrics: events sent, and no stream left open.
	if sent := s.Metric(servedBy, "profiles_query_change_events_sent_total"); sent < float64(perConn[1]) {
		t.Fatalf("profiles_query_change_events_sent_total = %v on %s, the first connection got %d", sent, servedBy, perConn[1])
	}
	waitFor(t, 10*time.Second, "streams to close on "+servedBy, func() bool {
		return s.Metric(servedBy, "profiles_query_change_streams_open") == 0
	})
}
