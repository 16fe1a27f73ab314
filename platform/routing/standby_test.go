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
	asked    atomic.Int32
	released atomic.Int32
}

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
