package routing

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/kafkax"
)

// holdingRouter serves every partition here, and Holds reports held.
type holdingRouter struct {
	self kafkax.Member
	held atomic.Bool
}

func (h *holdingRouter) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return h.self, true, nil
}

func (h *holdingRouter) Holds(int32, int) bool { return h.held.Load() }

// A read answered here is sent only if the instance still serves the
// partition after the read; otherwise it is routed again, and once the
// routing wait is over without an owner, dropped for a 503 that may be
// retried. A write is not held back: its outcome is checked where it is
// decided.
func TestReadIsAnsweredOnlyWhileHeld(t *testing.T) {
	for _, now := range []bool{false, true} {
		t.Run(nowName(now), func(t *testing.T) { testReadIsAnsweredOnlyWhileHeld(t, now) })
	}
}

// servesNow is a Router that is also a NowRouter, which always says that
// it serves p now in epoch 0.
type servesNow struct {
	Router
	Holder
}

func (servesNow) ServesNow(int32) (int, bool) { return 0, true }

func nowName(now bool) string {
	if now {
		return "NowRouter"
	}
	return "Router"
}

// withNow returns r, made a NowRouter when now is set.
func withNow(r interface {
	Router
	Holder
}, now bool) Router {
	if now {
		return servesNow{r, r}
	}
	return r
}

func testReadIsAnsweredOnlyWhileHeld(t *testing.T, now bool) {
	r := &holdingRouter{self: kafkax.Member{ID: "a"}}
	rt := Routing{Router: withNow(r, now), Self: r.self, Wait: time.Second, Log: slog.Default()}
	srv := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 3, true },
		http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("ETag", `"7"`)
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "stale?")
		})))
	defer srv.Close()
	get := func(method string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL, strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	r.held.Store(true)
	if resp, body := get(http.MethodGet); resp.StatusCode != 200 || body != "stale?" || resp.Header.Get("ETag") != `"7"` || resp.Header.Get(HeaderServedBy) != "a" {
		t.Fatalf("held: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	r.held.Store(false)
	resp, body := get(http.MethodGet)
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, "stale?") || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(body, "partition-unavailable") || resp.Header.Get("ETag") != "" {
		t.Fatalf("not held: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := get(http.MethodPut); resp.StatusCode != 200 || body != "stale?" {
		t.Fatalf("a write: %d %q", resp.StatusCode, body)
	}
}

// flakyHolder loses the partition during the first read only: the
// partition came back (a rebalance that gave it to this instance again).
type flakyHolder struct {
	self  kafkax.Member
	holds atomic.Int32
}

func (h *flakyHolder) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return h.self, true, nil
}

func (h *flakyHolder) Holds(int32, int) bool { return h.holds.Add(1) > 1 }

// A read that lost its partition while it read is routed again, not
// answered 503: during a rebalance the partition comes back, here or at
// another instance, within the routing wait, and the client never sees the
// rebalance (the front door's reads during a rebalance must not fail).
func TestReadThatLostItsPartitionIsRoutedAgain(t *testing.T) {
	for _, now := range []bool{false, true} {
		t.Run(nowName(now), func(t *testing.T) { testReadThatLostItsPartitionIsRoutedAgain(t, now) })
	}
}

func testReadThatLostItsPartitionIsRoutedAgain(t *testing.T, now bool) {
	r := &flakyHolder{self: kafkax.Member{ID: "a"}}
	rt := Routing{Router: withNow(r, now), Self: r.self, Wait: 5 * time.Second, Log: slog.Default()}
	var reads atomic.Int32
	srv := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 3, true },
		http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			reads.Add(1)
			_, _ = io.WriteString(w, "fresh")
		})))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "fresh" || resp.Header.Get(HeaderServedBy) != "a" || len(resp.Header.Values(HeaderServedBy)) != 1 {
		t.Fatalf("a read that lost its partition once: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if n := reads.Load(); n != 2 {
		t.Fatalf("the handler read %d times, want 2 (the lost read, then the routed one)", n)
	}
}

// Every forward of a write carries one request id, the same when it is
// sent again to a new owner; a read carries none.
func TestWriteForwardsCarryOneRequestID(t *testing.T) {
	var ids []string
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ids = append(ids, r.Method+" "+r.Header.Get(HeaderRequestID))
	}))
	defer owner.Close()
	b := kafkax.Member{ID: "b", URL: owner.URL}
	srvA, _ := instance(t, "a", &fakeRouter{selfID: "a", owners: []kafkax.Member{b}})
	for _, m := range []string{http.MethodPut, http.MethodGet, http.MethodDelete} {
		req, _ := http.NewRequest(m, srvA.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(ids) != 3 || len(ids[0]) != len("PUT ")+36 || ids[0][len("PUT ")+14] != '7' || ids[1] != "GET " || ids[2][len("DELETE "):] == ids[0][len("PUT "):] {
		t.Fatalf("request ids %q", ids)
	}
}

// interruptingRouter serves every partition here and cuts the first read
// short after 50 ms (the partition was handed over, and came back).
type interruptingRouter struct {
	self  kafkax.Member
	calls atomic.Int32
}

func (h *interruptingRouter) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return h.self, true, nil
}

func (h *interruptingRouter) Holds(int32, int) bool { return true }

func (h *interruptingRouter) Interrupt(ctx context.Context, _ int32, _ int) (context.Context, context.CancelFunc) {
	if h.calls.Add(1) == 1 {
		return context.WithTimeout(ctx, 50*time.Millisecond)
	}
	return context.WithCancel(ctx)
}

// A read that waits (a minVersion long-poll) and is cut short by the
// Interrupter is routed again, even past the routing wait, and its
// cut-short answer is never sent.
func TestInterruptedReadIsRoutedAgain(t *testing.T) {
	r := &interruptingRouter{self: kafkax.Member{ID: "a"}}
	rt := Routing{Router: r, Self: r.self, Wait: 20 * time.Millisecond, Log: slog.Default()}
	var reads atomic.Int32
	srv := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 3, true },
		http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if reads.Add(1) == 1 {
				<-req.Context().Done() // waits for a version that never comes here
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "not yet")
				return
			}
			_, _ = io.WriteString(w, "fresh")
		})))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "fresh" {
		t.Fatalf("an interrupted read: %d %q, want 200 \"fresh\"", resp.StatusCode, body)
	}
	if n := reads.Load(); n != 2 {
		t.Fatalf("the handler read %d times, want 2 (the interrupted read, then the routed one)", n)
	}
}

// countingInterrupter serves every partition here, always holds it, and
// counts the reads made interruptible.
type countingInterrupter struct {
	self  kafkax.Member
	calls atomic.Int32
}

func (h *countingInterrupter) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return h.self, true, nil
}

func (h *countingInterrupter) Holds(int32, int) bool { return true }

func (h *countingInterrupter) Interrupt(ctx context.Context, _ int32, _ int) (context.Context, context.CancelFunc) {
	h.calls.Add(1)
	return context.WithCancel(ctx)
}

// With Waits, only a read that may wait is made interruptible; every read
// is answered under the lease check all the same.
func TestOnlyReadsThatWaitAreInterruptible(t *testing.T) {
	r := &countingInterrupter{self: kafkax.Member{ID: "a"}}
	rt := Routing{Router: r, Self: r.self, Wait: time.Second, Log: slog.Default(),
		Waits: func(req *http.Request) bool { return req.URL.Query().Has("minVersion") }}
	h := rt.Handler(func(*http.Request) (int32, bool) { return 3, true },
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	for _, tc := range []struct {
		target string
		calls  int32
	}{{"/api/profile/u", 0}, {"/api/profile/u?minVersion=3", 1}} {
		r.calls.Store(0)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.target, nil))
		if rec.Code != http.StatusOK || rec.Body.String() != "ok" || rec.Header().Get(HeaderServedBy) != "a" {
			t.Fatalf("%s: %d %q %v", tc.target, rec.Code, rec.Body, rec.Header())
		}
		if n := r.calls.Load(); n != tc.calls {
			t.Fatalf("%s: made interruptible %d times, want %d", tc.target, n, tc.calls)
		}
	}
}
