package routing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/auth"
	"profiles/platform/kafkax"
)

// fakeRouter routes every partition to owners[0] until switchAt calls, then to owners[1].
type fakeRouter struct {
	owners   []kafkax.Member
	selfID   string
	calls    atomic.Int32
	switchAt int32
}

func (f *fakeRouter) Route(ctx context.Context, p int32) (kafkax.Member, bool, error) {
	o := f.owners[0]
	if n := f.calls.Add(1); f.switchAt > 0 && n > f.switchAt {
		o = f.owners[1]
	}
	return o, o.ID == f.selfID, nil
}

func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, name+":"+string(b))
	})
}

func instance(t *testing.T, id string, router Router) (*httptest.Server, kafkax.Member) {
	t.Helper()
	rt := Routing{Router: router, Self: kafkax.Member{ID: id}, Wait: 2 * time.Second, Log: slog.Default()}
	srv := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 0, true }, echo(id)))
	t.Cleanup(srv.Close)
	return srv, kafkax.Member{ID: id, URL: srv.URL}
}

func TestForwardsOnceToTheOwner(t *testing.T) {
	owner := &fakeRouter{selfID: "b"}
	srvB, b := instance(t, "b", owner)
	owner.owners = []kafkax.Member{b}
	srvA, _ := instance(t, "a", &fakeRouter{selfID: "a", owners: []kafkax.Member{b}})

	resp, err := http.Post(srvA.URL, "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "b:hi" || resp.Header.Get(HeaderServedBy) != "b" || resp.Header.Get(HeaderHops) != "1" {
		t.Fatalf("got %q served by %q hops %q", body, resp.Header.Get(HeaderServedBy), resp.Header.Get(HeaderHops))
	}
	resp, _ = http.Get(srvB.URL)
	resp.Body.Close()
	if resp.Header.Get(HeaderHops) != "0" {
		t.Fatalf("a local request reports %s hops", resp.Header.Get(HeaderHops))
	}
}

func TestNeverForwardsTwice(t *testing.T) {
	// b believes a owns the partition, and a believes b does: a forwarded
	// request must not bounce back.
	ra := &fakeRouter{selfID: "a"}
	rb := &fakeRouter{selfID: "b"}
	srvA, a := instance(t, "a", ra)
	_, b := instance(t, "b", rb)
	ra.owners = []kafkax.Member{b}
	rb.owners = []kafkax.Member{a}
	start := time.Now()
	resp, err := http.Get(srvA.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("status %d after %v", resp.StatusCode, time.Since(start))
	}
}

func TestRetriesWhenTheOwnerIsDead(t *testing.T) {
	dead := deadMember(t)
	rc := &fakeRouter{selfID: "c"}
	_, c := instance(t, "c", rc)
	rc.owners = []kafkax.Member{c}
	srvA, _ := instance(t, "a", &fakeRouter{selfID: "a", owners: []kafkax.Member{dead, c}, switchAt: 2})

	resp, err := http.Post(srvA.URL, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "c:body" {
		t.Fatalf("status %d body %q; want the new owner to get the replayed body", resp.StatusCode, body)
	}
}

func TestServesLocallyWithTheBodyWhenThePartitionMovesHere(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := kafkax.Member{ID: "dead", URL: "http://" + l.Addr().String()}
	l.Close()
	srvA, _ := instance(t, "a", &fakeRouter{selfID: "a", owners: []kafkax.Member{dead, {ID: "a"}}, switchAt: 1})
	resp, err := http.Post(srvA.URL, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "a:body" || resp.Header.Get(HeaderServedBy) != "a" {
		t.Fatalf("got %q from %q", body, resp.Header.Get(HeaderServedBy))
	}
}

// A forward is signed (Routing.Sign) after its forwarding headers are set,
// and keeps the caller's Authorization header, so that the owner can check
// both: the signature with auth.Signer.Verify, the token as usual.
func TestForwardIsSignedAndKeepsTheCallersToken(t *testing.T) {
	signer, err := auth.NewSigner("0123456789abcdef0123456789abcdef-routing")
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		verifyErr          error
		authz, forwardedBy string
		body               string
	}
	seen := make(chan got, 1)
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := got{verifyErr: signer.Verify(r), authz: r.Header.Get("Authorization"), forwardedBy: r.Header.Get(HeaderForwardedBy)}
		b, _ := io.ReadAll(r.Body)
		g.body = string(b)
		seen <- g
		w.WriteHeader(http.StatusNoContent)
	}))
	defer owner.Close()
	b := kafkax.Member{ID: "b", URL: owner.URL}
	rt := Routing{Router: &fakeRouter{selfID: "a", owners: []kafkax.Member{b}}, Self: kafkax.Member{ID: "a"}, Wait: 2 * time.Second,
		Log: slog.Default(), Sign: signer.Sign}
	srvA := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 0, true }, echo("a")))
	defer srvA.Close()

	req, _ := http.NewRequest(http.MethodPut, srvA.URL+"/api/profile/x?y=1", strings.NewReader(`{"username":"bob"}`))
	req.Header.Set("Authorization", "Bearer caller-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	g := <-seen
	if resp.StatusCode != http.StatusNoContent || g.verifyErr != nil || g.authz != "Bearer caller-token" || g.forwardedBy != "a" || g.body != `{"username":"bob"}` {
		t.Fatalf("status %d; the owner saw %+v", resp.StatusCode, g)
	}
}

// Every attempt of a forward is signed anew, with a fresh nonce: when the
// owner took a read but never answered it (it died with the read in
// flight), the retry is not refused as a replay of the first attempt.
func TestEachForwardAttemptIsSignedAnew(t *testing.T) {
	signer, err := auth.NewSigner("0123456789abcdef0123456789abcdef-routing")
	if err != nil {
		t.Fatal(err)
	}
	var (
		attempts atomic.Int32
		mu       sync.Mutex
		nonces   []string
		errs     []error
	)
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := signer.Verify(r)
		mu.Lock()
		nonces = append(nonces, r.Header.Get(auth.HeaderNonce))
		errs = append(errs, err)
		mu.Unlock()
		if attempts.Add(1) == 1 {
			// Accepted, then no answer: the connection just closes.
			conn, _, herr := http.NewResponseController(w).Hijack()
			if herr == nil {
				conn.Close()
			}
			return
		}
		_, _ = io.WriteString(w, "b")
	}))
	defer owner.Close()
	b := kafkax.Member{ID: "b", URL: owner.URL}
	rt := Routing{Router: &fakeRouter{selfID: "a", owners: []kafkax.Member{b}}, Self: kafkax.Member{ID: "a"}, Wait: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Sign: signer.Sign}
	srvA := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 0, true }, echo("a")))
	defer srvA.Close()

	resp, err := http.Get(srvA.URL + "/api/profile/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != http.StatusOK || string(body) != "b" {
		t.Fatalf("status %d %q; the owner's checks: %v", resp.StatusCode, body, errs)
	}
	if len(nonces) != 2 || nonces[0] == "" || nonces[0] == nonces[1] || errs[0] != nil || errs[1] != nil {
		t.Fatalf("attempts with nonces %q, checks %v: want two, each signed anew", nonces, errs)
	}
}

// cutOffRouter is the table of an instance cut off from its group
// coordinator: it routes nothing (kafkax.ErrCutOff), and counts the
// requests it was asked to route.
type cutOffRouter struct{ asked atomic.Int32 }

func (c *cutOffRouter) Route(context.Context, int32) (kafkax.Member, bool, error) {
	c.asked.Add(1)
	return kafkax.Member{}, false, fmt.Errorf("%w (partition 0): %w", kafkax.ErrNoOwner, kafkax.ErrCutOff)
}

// A forwarded request whose receiver cannot route it (it is cut off from
// the brokers, and its stale table still names itself) is answered at
// once with HeaderNotServed, and the forwarder routes it again by its own
// table: the request reaches the new owner as soon as the forwarder's
// table names it, instead of waiting out the receiver's routing wait or
// failing with the receiver's 503. Once the forwarder's wait is over, it
// answers the 503 itself, and the marker never reaches the client.
func TestAForwardTheOwnerDidNotServeIsRoutedAgain(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			cut := &cutOffRouter{}
			_, b := instance(t, "b", cut)
			// a's table names b for its first two lookups (two forwards,
			// each answered not served), then a.
			srvA, _ := instance(t, "a", &fakeRouter{selfID: "a", owners: []kafkax.Member{b, {ID: "a"}}, switchAt: 2})
			start := time.Now()
			req, _ := http.NewRequest(method, srvA.URL, strings.NewReader("body"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "a:body" || resp.Header.Get(HeaderServedBy) != "a" {
				t.Fatalf("status %d body %q served by %q; want a to serve it once its table names it", resp.StatusCode, body, resp.Header.Get(HeaderServedBy))
			}
			if n := cut.asked.Load(); n != 2 {
				t.Errorf("b was asked to route %d times; want 2 (one per forward)", n)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %s; want two forwards and a 200 ms pause after each, not b's routing wait (2 s)", took)
			}

			// a's table names b throughout: a answers 503 once its own
			// wait (2 s) is over, without b's marker.
			cut2 := &cutOffRouter{}
			_, b2 := instance(t, "b2", cut2)
			srvA2, _ := instance(t, "a2", &fakeRouter{selfID: "a2", owners: []kafkax.Member{b2}})
			req, _ = http.NewRequest(method, srvA2.URL, strings.NewReader("body"))
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || resp.Header.Get(HeaderNotServed) != "" {
				t.Fatalf("status %d %v %q; want a's own 503 with Retry-After and no %s", resp.StatusCode, resp.Header, body, HeaderNotServed)
			}
			if n := cut2.asked.Load(); n < 3 {
				t.Errorf("b2 was asked %d times in a's 2 s wait; want a forward every 200 ms or so", n)
			}
		})
	}
}

// disconnected is a Router whose table no longer follows its group
// (ConnectedRouter).
type disconnected struct{ Router }

func (disconnected) Connected() bool { return false }

// A forwarder that is cut off from its group too cannot learn of a new
// owner by routing again: a write its owner did not serve fails at once
// (503, Retry-After), instead of waiting out the forwarder's routing wait
// while every table involved stands still (two brokers down, and the
// group's coordinator with them). (A read waits and is routed again:
// TestAForwardTheOwnerDidNotServeIsRoutedAgain.)
func TestANotServedWriteFailsAtOnceWhenTheForwarderIsCutOffToo(t *testing.T) {
	cut := &cutOffRouter{}
	_, b := instance(t, "b", cut)
	srvA, _ := instance(t, "a", disconnected{&fakeRouter{selfID: "a", owners: []kafkax.Member{b}}})
	start := time.Now()
	resp, err := http.Post(srvA.URL, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d %v; want 503 with Retry-After", resp.StatusCode, resp.Header)
	}
	if n, took := cut.asked.Load(), time.Since(start); n != 1 || took > time.Second {
		t.Errorf("b was asked %d times in %s; want one forward, and a 503 at once", n, took)
	}

	// A read routed by the same disconnected table waits, and is served
	// once the table names an owner that serves it.
	srvA, _ = instance(t, "a", disconnected{&fakeRouter{selfID: "a", owners: []kafkax.Member{b, {ID: "a"}}, switchAt: 2}})
	resp, err = http.Get(srvA.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "a:" {
		t.Fatalf("a read: status %d body %q; want it served by a once a's table names a", resp.StatusCode, body)
	}
}
