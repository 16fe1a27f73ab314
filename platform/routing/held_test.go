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
// partition after the read; otherwise it is dropped for a 503 that may be
// retried. A write is not held back: its outcome is checked where it is
// decided.
func TestReadIsAnsweredOnlyWhileHeld(t *testing.T) {
	r := &holdingRouter{self: kafkax.Member{ID: "a"}}
	rt := Routing{Router: r, Self: r.self, Wait: time.Second, Log: slog.Default()}
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
