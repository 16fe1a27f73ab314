package frontdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"profiles/platform/kafkax"
	"profiles/platform/routing"
)

func TestKeyOf(t *testing.T) {
	const uid = "0190a3c4-0000-7000-8000-000000000001"
	tests := []struct {
		method, path string
		key          string
		ok           bool
	}{
		{"GET", "/api/profile/" + uid, uid, true},
		{"HEAD", "/api/profile/" + uid, uid, true},
		{"GET", "/api/profile/" + uid + "/history", uid, true},
		{"PUT", "/api/profile/" + uid, uid, true},
		{"DELETE", "/api/profile/" + uid, uid, true},
		// A history is only read.
		{"PUT", "/api/profile/" + uid + "/history", "", false},
		{"POST", "/api/profile/" + uid, "", false},
		// Placed by an email's HMAC, which the front door cannot compute.
		{"POST", "/api/profile", "", false},
		{"GET", "/api/search", "", false},
		{"GET", "/api/changes", "", false},
		{"GET", "/api/profile/", "", false},
		{"GET", "/api/profile/" + uid + "/history/x", "", false},
		{"GET", "/api/profile/a/b", "", false},
	}
	for _, tt := range tests {
		key, ok := keyOf(tt.method, tt.path)
		if key != tt.key || ok != tt.ok {
			t.Errorf("keyOf(%s %s) = %q, %v; want %q, %v", tt.method, tt.path, key, ok, tt.key, tt.ok)
		}
	}
}

// fakeUpstreams gives every member an upstream of its own, by URL.
func fakeUpstreams() func(kafkax.Member) *upstream {
	byURL := map[string]*upstream{}
	return func(m kafkax.Member) *upstream {
		u := memberURL(m.URL)
		if u == nil {
			return nil
		}
		if byURL[m.URL] == nil {
			byURL[m.URL] = &upstream{url: u}
		}
		return byURL[m.URL]
	}
}

func member(id string, parts ...int32) routing.TableMember {
	return routing.TableMember{Member: kafkax.Member{ID: id, URL: "http://" + id + ":8082"}, Partitions: parts}
}

func TestBuildTable(t *testing.T) {
	rep := routing.Table{Partitions: 4, State: "Stable", Members: []routing.TableMember{member("q0", 0, 2), member("q1", 1)}}
	tab, err := buildTable(rep, fakeUpstreams())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"q0", "q1", "q0", ""}
	for p, id := range want {
		got := tab.owners[p]
		if got.id != id || (id == "") != (got.u == nil) {
			t.Errorf("partition %d: owner %q (%v), want %q", p, got.id, got.u, id)
		}
		if id != "" && got.u.url.Host != id+":8082" {
			t.Errorf("partition %d goes to %s", p, got.u.url)
		}
	}
	if len(tab.ids) != 2 || tab.ids["q0"] != tab.owners[0].u {
		t.Errorf("ids = %v", tab.ids)
	}

	bad := []struct {
		name string
		rep  routing.Table
		is   error
	}{
		{"rebalancing", routing.Table{Partitions: 4, State: "PreparingRebalance", Members: rep.Members}, errNotStable},
		{"full replica", routing.Table{Partitions: 4, Mode: "full"}, errNotStable},
		{"no partition count", routing.Table{State: "Stable", Members: rep.Members}, nil},
		{"a partition out of range", routing.Table{Partitions: 2, State: "Stable", Members: rep.Members}, nil},
		{"a negative partition", routing.Table{Partitions: 4, State: "Stable", Members: []routing.TableMember{member("q0", -1)}}, nil},
	}
	for _, tt := range bad {
		if _, err := buildTable(tt.rep, fakeUpstreams()); err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.is)
		}
	}

	// A member without a URL (of another version), or with a URL that is
	// not http(s), owns nothing the front door can reach.
	odd := routing.Table{Partitions: 3, State: "Stable", Members: []routing.TableMember{
		member("q0", 0),
		{Member: kafkax.Member{ID: "old"}, Partitions: []int32{1}},
		{Member: kafkax.Member{ID: "ftp", URL: "ftp://q:21"}, Partitions: []int32{2}},
	}}
	tab, err = buildTable(odd, fakeUpstreams())
	if err != nil {
		t.Fatal(err)
	}
	if tab.owners[0].id != "q0" || tab.owners[1].u != nil || tab.owners[2].u != nil || len(tab.ids) != 1 {
		t.Errorf("owners = %+v, ids = %v", tab.owners, tab.ids)
	}
}

func TestOwnerOfUsesKafkasPartitioner(t *testing.T) {
	var none *table
	if p, o := none.ownerOf("x"); p != -1 || o.u != nil {
		t.Errorf("a nil table placed x on %d (%+v)", p, o)
	}
	var members []routing.TableMember
	for p := range int32(12) {
		members = append(members, member(fmt.Sprintf("q%d", p%3), p))
	}
	tab, err := buildTable(routing.Table{Partitions: 12, State: "Stable", Members: members}, fakeUpstreams())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		uid := uuid.NewString()
		p, o := tab.ownerOf(uid)
		if want := kafkax.Partition(uid, 12); p != want {
			t.Fatalf("uid %d: partition %d, want %d", i, p, want)
		}
		if want := fmt.Sprintf("q%d", p%3); o.id != want {
			t.Fatalf("partition %d: owner %s, want %s", p, o.id, want)
		}
	}
}

func TestLearn(t *testing.T) {
	tab, err := buildTable(routing.Table{Partitions: 3, State: "Stable", Members: []routing.TableMember{member("q0", 0, 1), member("q1", 2)}}, fakeUpstreams())
	if err != nil {
		t.Fatal(err)
	}
	moved := tab.learn(1, 3, "q1")
	if moved == nil || moved.owners[1].id != "q1" || moved.owners[1].u != tab.ids["q1"] {
		t.Fatalf("learn(1, q1) = %+v", moved)
	}
	if tab.owners[1].id != "q0" {
		t.Error("learn changed the table it was given")
	}
	if moved.owners[0] != tab.owners[0] || moved.owners[2] != tab.owners[2] {
		t.Error("learn moved other partitions")
	}
	for _, tt := range []struct {
		name string
		p, n int32
		id   string
	}{
		{"already the owner", 2, 3, "q1"},
		{"an unknown member", 1, 3, "q9"},
		{"another partition count", 1, 4, "q1"},
		{"no partition", -1, 3, "q1"},
	} {
		if got := tab.learn(tt.p, tt.n, tt.id); got != nil {
			t.Errorf("%s: learn changed the table: %+v", tt.name, got.owners)
		}
	}
	var none *table
	if none.learn(0, 3, "q0") != nil {
		t.Error("a nil table learned")
	}
}

// fakeGroup is a group of fake instances: each serves its routing table
// (what reported says) and answers /api/profile/{uid} as the routing
// layer would: served by the owner in owners, in 0 hops if that is the
// instance, else 1 (it forwarded the request).
type fakeGroup struct {
	n        int32
	mu       sync.Mutex
	state    string
	owners   map[int32]string
	reported map[int32]string
	urls     map[string]string
	direct   map[string]int // API requests each instance received
	writes   int
	servers  []*httptest.Server
}

func newFakeGroup(t *testing.T, n int32, ids ...string) *fakeGroup {
	g := &fakeGroup{n: n, state: "Stable", owners: map[int32]string{}, urls: map[string]string{}, direct: map[string]int{}}
	for p := range n {
		g.owners[p] = ids[int(p)%len(ids)]
	}
	for _, id := range ids {
		srv := httptest.NewServer(g.instance(id))
		t.Cleanup(srv.Close)
		g.urls[id] = srv.URL
		g.servers = append(g.servers, srv)
	}
	return g
}

func (g *fakeGroup) instance(id string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if r.URL.Path == routing.TablePath {
			rep := routing.Table{Self: kafkax.Member{ID: id, URL: g.urls[id]}, Mode: "partitioned", Partitions: g.n, State: g.state}
			owners := g.reported
			if owners == nil {
				owners = g.owners
			}
			byID := map[string][]int32{}
			for p := range g.n {
				byID[owners[p]] = append(byID[owners[p]], p)
			}
			for m, parts := range byID {
				rep.Members = append(rep.Members, routing.TableMember{Member: kafkax.Member{ID: m, URL: g.urls[m]}, Partitions: parts})
			}
			_ = json.NewEncoder(w).Encode(rep)
			return
		}
		uid := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/profile/"), "/history")
		owner := g.owners[kafkax.Partition(uid, g.n)]
		g.direct[id]++
		if r.Method == http.MethodPut {
			g.writes++
		}
		w.Header().Set(routing.HeaderServedBy, owner)
		hops := "1"
		if owner == id {
			hops = "0"
		}
		w.Header().Set(routing.HeaderHops, hops)
		_, _ = io.WriteString(w, owner)
	})
}

// hits returns how many API requests instance id received, and how many
// PUTs the group did.
func (g *fakeGroup) hits(id string) (direct, writes int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.direct[id], g.writes
}

func (g *fakeGroup) configured() []*url.URL {
	var out []*url.URL
	for _, s := range g.servers {
		out = append(out, mustParse(s.URL))
	}
	return out
}

// startFrontDoor runs New(cmd, qry) on a real server, and returns it and
// its URL. With run, it keeps its tables (FrontDoor.Run); without, it
// reads them once, and learns only from answers.
func startFrontDoor(t *testing.T, cmd, qry []*url.URL, run bool) (*FrontDoor, string) {
	t.Helper()
	fd, err := New(cmd, qry, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = fd.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	} else {
		for _, p := range []*pool{fd.read, fd.write} {
			if got := p.poll(context.Background()); got != "ok" {
				t.Fatalf("reading the table of %s: %s", p.name, got)
			}
		}
	}
	srv := httptest.NewServer(fd)
	t.Cleanup(srv.Close)
	return fd, srv.URL
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get sends a request and returns who served it, in how many hops.
func send(t *testing.T, method, u string) (servedBy, hops string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s = %s", method, u, resp.Status)
	}
	return resp.Header.Get(routing.HeaderServedBy), resp.Header.Get(routing.HeaderHops)
}

// Once the front door knows the tables, every request by uid goes
// straight to its owner, reads and writes, and search still goes
// round-robin.
func TestRequestsGoStraightToTheOwner(t *testing.T) {
	q := newFakeGroup(t, 12, "q0", "q1", "q2")
	c := newFakeGroup(t, 12, "c0", "c1")
	fd, front := startFrontDoor(t, c.configured(), q.configured(), true)
	waitFor(t, "tables", func() bool { return fd.read.table.Load() != nil && fd.write.table.Load() != nil })

	owners0 := testutil.ToFloat64(routedRequests.WithLabelValues("query-svc", "owner"))
	for range 100 {
		uid := uuid.NewString()
		for _, r := range []struct {
			method, path string
			g            *fakeGroup
		}{
			{"GET", "/api/profile/" + uid, q},
			{"GET", "/api/profile/" + uid + "/history", q},
			{"PUT", "/api/profile/" + uid, c},
			{"DELETE", "/api/profile/" + uid, c},
		} {
			by, hops := send(t, r.method, front+r.path)
			if want := r.g.owners[kafkax.Partition(uid, 12)]; by != want || hops != "0" {
				t.Fatalf("%s %s served by %s in %s hops; the owner is %s", r.method, r.path, by, hops, want)
			}
		}
	}
	if got := testutil.ToFloat64(routedRequests.WithLabelValues("query-svc", "owner")) - owners0; got != 200 {
		t.Errorf("%v reads counted as routed to the owner, want 200", got)
	}
	if _, writes := c.hits(""); writes != 100 {
		t.Errorf("%d PUTs reached command-svc, want 100", writes)
	}
	// A search has no key the front door can compute: round-robin.
	before := map[string]int{}
	for _, id := range []string{"q0", "q1", "q2"} {
		before[id], _ = q.hits(id)
	}
	for range 6 {
		send(t, "GET", front+"/api/search?email=a@b.c")
	}
	for _, id := range []string{"q0", "q1", "q2"} {
		if n, _ := q.hits(id); n-before[id] != 2 {
			t.Errorf("%s got %d of 6 searches; round-robin gives each 2", id, n-before[id])
		}
	}
}

// Without a table (at start, or instances that serve none), every request
// goes round-robin and is still answered.
func TestNoTableFallsBackToRoundRobin(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fd, front := startFrontDoor(t, urls(a), urls(a, b), true)
	fallback0 := testutil.ToFloat64(routedRequests.WithLabelValues("query-svc", "fallback"))
	for range 4 {
		if resp, _ := do(t, "GET", front+"/api/profile/"+uuid.NewString(), nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET = %s", resp.Status)
		}
	}
	if fd.read.table.Load() != nil {
		t.Fatal("a table from instances that serve none")
	}
	if len(a.Hits()) < 2 || len(b.Hits()) < 2 {
		t.Errorf("round-robin: a got %d, b %d", len(a.Hits()), len(b.Hits()))
	}
	if got := testutil.ToFloat64(routedRequests.WithLabelValues("query-svc", "fallback")) - fallback0; got != 4 {
		t.Errorf("%v requests counted as fallback, want 4", got)
	}
}

// When the partitions move and the table the front door holds is still
// the old one, the first answer for a partition (forwarded once, served
// by the new owner) teaches the front door its new owner: the next
// request for it goes there directly.
func TestAnAnswerTeachesTheNewOwner(t *testing.T) {
	q := newFakeGroup(t, 4, "q0", "q1")
	c := newFakeGroup(t, 4, "c0")
	_, front := startFrontDoor(t, c.configured(), q.configured(), false)

	q.mu.Lock()
	q.reported = map[int32]string{0: "q0", 1: "q1", 2: "q0", 3: "q1"}
	q.owners = map[int32]string{0: "q1", 1: "q0", 2: "q1", 3: "q0"}
	q.mu.Unlock()
	stale0 := testutil.ToFloat64(staleAnswers.WithLabelValues("query-svc"))
	seen := map[int32]bool{}
	for len(seen) < 4 {
		uid := uuid.NewString()
		p := kafkax.Partition(uid, 4)
		by, hops := send(t, "GET", front+"/api/profile/"+uid)
		if by != q.owners[p] {
			t.Fatalf("served by %s, the owner is %s", by, q.owners[p])
		}
		if want := map[bool]string{false: "1", true: "0"}[seen[p]]; hops != want {
			t.Fatalf("partition %d, seen before %v: %s hops, want %s", p, seen[p], hops, want)
		}
		seen[p] = true
	}
	if got := testutil.ToFloat64(staleAnswers.WithLabelValues("query-svc")) - stale0; got != 4 {
		t.Errorf("%v stale answers counted, want 4 (one per partition)", got)
	}
}

// A rebalancing group's view keeps the table in use; the next stable one
// replaces it.
func TestTheTableFollowsTheGroup(t *testing.T) {
	q := newFakeGroup(t, 4, "q0", "q1")
	c := newFakeGroup(t, 4, "c0")
	fd, _ := startFrontDoor(t, c.configured(), q.configured(), true)
	waitFor(t, "a table", func() bool { return fd.read.table.Load() != nil })
	first := fd.read.table.Load()

	q.mu.Lock()
	q.state = "PreparingRebalance"
	q.owners = map[int32]string{0: "q1", 1: "q1", 2: "q1", 3: "q1"}
	q.mu.Unlock()
	time.Sleep(2 * pollEvery)
	if fd.read.table.Load() != first {
		t.Fatal("a rebalancing group's view replaced the table")
	}
	q.mu.Lock()
	q.state = "Stable"
	q.mu.Unlock()
	waitFor(t, "the new table", func() bool {
		tab := fd.read.table.Load()
		for p := range int32(4) {
			if tab.owners[p].id != "q1" {
				return false
			}
		}
		return true
	})
}

// An owner that cannot be connected to (it died; the group has not moved
// on yet): the request goes to the configured instances, which forward
// it, a write only once.
func TestUnreachableOwnerFallsBack(t *testing.T) {
	c := newFakeGroup(t, 4, "c0", "c1")
	fd, front := startFrontDoor(t, c.configured(), newFakeGroup(t, 4, "q0").configured(), false)
	c.mu.Lock()
	c.owners = map[int32]string{0: "c0", 1: "c0", 2: "c0", 3: "c0"}
	c.mu.Unlock()
	c.servers[1].Close()

	fallback0 := testutil.ToFloat64(routedRequests.WithLabelValues("command-svc", "fallback"))
	uid := uuid.NewString()
	for fd.write.table.Load().owners[kafkax.Partition(uid, 4)].id != "c1" {
		uid = uuid.NewString()
	}
	if by, _ := send(t, "PUT", front+"/api/profile/"+uid); by != "c0" {
		t.Fatalf("served by %s", by)
	}
	if _, writes := c.hits(""); writes != 1 {
		t.Errorf("the PUT reached command-svc %d times, want 1", writes)
	}
	// The answer named c0 as the owner; until then, an owner that could
	// not be connected to is not tried first.
	if by, hops := send(t, "PUT", front+"/api/profile/"+uid); by != "c0" || hops != "0" {
		t.Fatalf("second PUT served by %s in %s hops", by, hops)
	}
	if got := testutil.ToFloat64(routedRequests.WithLabelValues("command-svc", "fallback")) - fallback0; got > 1 {
		t.Errorf("%v PUTs fell back; want at most the first", got)
	}
}

// An owner that is not among the configured instances (added since the
// front door started) is reached at the URL it advertises.
func TestOwnerOutsideTheConfiguredList(t *testing.T) {
	q := newFakeGroup(t, 4, "q0", "q1")
	fd, front := startFrontDoor(t, newFakeGroup(t, 4, "c0").configured(), q.configured()[:1], true)
	waitFor(t, "a table", func() bool { return fd.read.table.Load() != nil })
	for range 20 {
		uid := uuid.NewString()
		if by, hops := send(t, "GET", front+"/api/profile/"+uid); hops != "0" || by != q.owners[kafkax.Partition(uid, 4)] {
			t.Fatalf("served by %s in %s hops", by, hops)
		}
	}
	if n, _ := q.hits("q1"); n == 0 {
		t.Error("q1, which is not configured, got no request directly")
	}
}

// With REPLICA_MODE=full every instance serves every partition: no table,
// round-robin.
func TestFullReplicaModeHasNoTable(t *testing.T) {
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(routing.Table{Self: kafkax.Member{ID: "q0"}, Mode: "full", Partitions: 4, Members: []routing.TableMember{}})
	}))
	t.Cleanup(full.Close)
	fd, err := New([]*url.URL{mustParse(full.URL)}, []*url.URL{mustParse(full.URL)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := fd.read.poll(context.Background()); got != "ok" || fd.read.table.Load() != nil {
		t.Fatalf("poll = %s, table %+v", got, fd.read.table.Load())
	}
}

func TestAPIRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/api/profile":                 "/api/profile",
		"/api/profile/abc":             "/api/profile/{uid}",
		"/api/profile/abc/history":     "/api/profile/{uid}/history",
		"/api/profile/abc/":            "/api/",
		"/api/profile/abc/other":       "/api/",
		"/api/profile/":                "/api/",
		"/api/search":                  "/api/search",
		"/api/changes":                 "/api/changes",
		"/api/bob1@mail.com":           "/api/",
		"/api/profile/abc/history/x/y": "/api/",
	} {
		if got := apiRoute(path); got != want {
			t.Errorf("apiRoute(%q) = %q; want %q", path, got, want)
		}
	}
}
