package routing

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/kafkax"
)

// standbyRouter names a dead owner for every partition, and keeps a warm
// copy of the partitions in warm.
type standbyRouter struct {
	fakeRouter
	warm     bool
	standbys []kafkax.Member
	asked    atomic.Int32
	released atomic.Int32
}

func (s *standbyRouter) StandbyOf(int32) []kafkax.Member { return s.standbys }

func (s *standbyRouter) ReadIndex(ctx context.Context, p int32) (func(), error) {
	s.asked.Add(1)
	if !s.warm {
		return nil, errors.New("not warm")
	}
	return func() { s.released.Add(1) }, nil
}

// deadMember returns a member whose address nothing listens on.
func deadMember(t *testing.T) kafkax.Member {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return kafkax.Member{ID: "dead", URL: "http://" + l.Addr().String()}
}

// A read whose owner cannot be dialed is served from this instance's warm
// copy, at its read index, and says so (X-Profiles-Standby); a write is
// never served that way, and a read without a warm copy waits for an
// owner as before.
func TestAReadOfAnUnreachableOwnerIsServedFromAWarmCopy(t *testing.T) {
	dead := deadMember(t)
	for _, tc := range []struct {
		name     string
		method   string
		warm     bool
		standby  bool // served here, from the warm copy
		wantCode int
	}{
		{"a read, warm", http.MethodGet, true, true, http.StatusOK},
		{"a read, not warm", http.MethodGet, false, false, http.StatusServiceUnavailable},
		{"a write, warm", http.MethodPost, true, false, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &standbyRouter{fakeRouter: fakeRouter{selfID: "a", owners: []kafkax.Member{dead}}, warm: tc.warm}
			rt := Routing{Router: r, Self: kafkax.Member{ID: "a"}, Wait: 500 * time.Millisecond}
			srv := instanceWith(t, rt)
			req, _ := http.NewRequest(tc.method, srv, strings.NewReader(""))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.wantCode)
			}
			standby := resp.Header.Get(HeaderStandby)
			if tc.standby {
				if string(body) != "a:" || resp.Header.Get(HeaderServedBy) != "a" || standby != "a" || resp.Header.Get(HeaderHops) != "0" {
					t.Fatalf("body %q served by %q, standby %q, hops %q; want a's warm copy", body, resp.Header.Get(HeaderServedBy), standby, resp.Header.Get(HeaderHops))
				}
				if r.released.Load() != 1 {
					t.Fatalf("released %d times, want 1", r.released.Load())
				}
				return
			}
			if standby != "" {
				t.Fatalf("answered from a warm copy (%s)", standby)
			}
			if tc.method != http.MethodGet && r.asked.Load() != 0 {
				t.Fatalf("a write asked for a read index %d times", r.asked.Load())
			}
		})
	}
}

// instanceWith serves rt around echo(rt.Self.ID) and returns its URL.
func instanceWith(t *testing.T, rt Routing) string {
	t.Helper()
	srv := httptest.NewServer(rt.Handler(func(*http.Request) (int32, bool) { return 0, true }, echo(rt.Self.ID)))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A read whose owner cannot be dialed, at an instance without a warm copy,
// is sent to the instance that keeps one, which serves it from there (one
// hop, X-Profiles-Standby); a read forwarded that way is never sent on
// again.
func TestAReadOfAnUnreachableOwnerIsSentToItsStandby(t *testing.T) {
	dead := deadMember(t)
	warm := &standbyRouter{fakeRouter: fakeRouter{selfID: "b", owners: []kafkax.Member{dead}}, warm: true}
	b := instanceWith(t, Routing{Router: warm, Self: kafkax.Member{ID: "b"}, Wait: 500 * time.Millisecond})
	cold := &standbyRouter{fakeRouter: fakeRouter{selfID: "a", owners: []kafkax.Member{dead}}, standbys: []kafkax.Member{{ID: "b", URL: b}}}
	a := instanceWith(t, Routing{Router: cold, Self: kafkax.Member{ID: "a"}, Wait: 500 * time.Millisecond})

	resp, err := http.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "b:" || resp.Header.Get(HeaderServedBy) != "b" || resp.Header.Get(HeaderStandby) != "b" || resp.Header.Get(HeaderHops) != "1" {
		t.Fatalf("status %d body %q served by %q standby %q hops %q; want b's warm copy, one hop", resp.StatusCode, body,
			resp.Header.Get(HeaderServedBy), resp.Header.Get(HeaderStandby), resp.Header.Get(HeaderHops))
	}
	if warm.released.Load() != 1 {
		t.Fatalf("b released %d standby reads, want 1", warm.released.Load())
	}

	// b loses its warm copy: a read sent to it for that copy is answered
	// not served (b's table names another owner), and a routes it again
	// until its wait ends.
	warm.warm = false
	resp, err = http.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(HeaderStandby) != "" {
		t.Fatalf("status %d standby %q; want 503 once nobody has a warm copy", resp.StatusCode, resp.Header.Get(HeaderStandby))
	}
}
