package adapters

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/httpx"
)

// A wait asks again, at the next instance, while query-svc answers that
// it cannot answer now (a drain or a rebalance), and ends at the first
// answer that tells: seen, or a refusal that asking again will not change.
func TestWaitVisibleAsksAgainWhileUnavailable(t *testing.T) {
	var calls atomic.Int32
	status := func(n int32) int {
		switch {
		case n <= 2:
			return http.StatusServiceUnavailable
		case n == 3:
			return http.StatusBadGateway
		}
		return http.StatusOK
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("minVersion") != "7" {
			t.Errorf("asked %s, want minVersion=7", r.URL)
		}
		w.WriteHeader(status(calls.Add(1)))
	}))
	defer srv.Close()
	v := &QueryVisibility{BaseURLs: []string{srv.URL, srv.URL}, Client: srv.Client(), Timeout: 5 * time.Second}
	if err := v.WaitVisible(context.Background(), "u1", 7, nil); err != nil {
		t.Fatalf("WaitVisible: %v, want nil after three unavailable answers", err)
	}
	if n := calls.Load(); n != 4 {
		t.Fatalf("asked %d times, want 4", n)
	}

	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer refuse.Close()
	v = &QueryVisibility{BaseURLs: []string{refuse.URL}, Client: refuse.Client(), Timeout: 5 * time.Second}
	start := time.Now()
	if err := v.WaitVisible(context.Background(), "u1", 7, []string{"a@b.c"}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("WaitVisible against a 401: %v, want an error naming it", err)
	} else if time.Since(start) > time.Second {
		t.Fatalf("a 401 was asked again for %s", time.Since(start))
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	v = &QueryVisibility{BaseURLs: []string{down.URL}, Client: down.Client(), Timeout: 300 * time.Millisecond}
	if err := v.WaitVisible(context.Background(), "u1", 7, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("WaitVisible while always unavailable: %v, want an error naming the 503 once the timeout passed", err)
	}
}

// An instance that neither answers nor sends 102 Processing (a network
// partition drops what is sent to it) ends the wait with
// ErrReadersUnreachable once every instance has been silent in a row,
// after about aliveWithin each, not after the whole timeout. One that
// sends 102 (httpx.AnswerAlive) and waits for the version is waited for.
func TestWaitVisibleGivesUpOnSilentInstancesOnly(t *testing.T) {
	aliveWithin = 200 * time.Millisecond
	defer func() { aliveWithin = time.Second }()
	hang := make(chan struct{})
	defer close(hang)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // no answer at all, as through a dropped route
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer silent.Close()
	v := &QueryVisibility{BaseURLs: []string{silent.URL, silent.URL}, Client: silent.Client(), Timeout: 10 * time.Second}
	start := time.Now()
	err := v.WaitVisible(context.Background(), "u1", 7, nil)
	if !errors.Is(err, ErrReadersUnreachable) {
		t.Fatalf("WaitVisible against silent instances: %v, want ErrReadersUnreachable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v; want about two times aliveWithin", d)
	}

	var asked atomic.Int32
	waiting := httptest.NewServer(httpx.AnswerAlive(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(httpx.HeaderAlive) == "" {
			t.Error("the wait did not ask for 102 Processing")
		}
		asked.Add(1)
		time.Sleep(700 * time.Millisecond) // the view reaches the version
		w.WriteHeader(http.StatusOK)
	})))
	defer waiting.Close()
	v = &QueryVisibility{BaseURLs: []string{waiting.URL}, Client: waiting.Client(), Timeout: 10 * time.Second}
	if err := v.WaitVisible(context.Background(), "u1", 7, []string{"a@b.c"}); err != nil {
		t.Fatalf("WaitVisible against an instance that sent 102 and waited: %v", err)
	}
	if n := asked.Load(); n != 2 {
		t.Fatalf("asked %d times, want once per target (2): a waiting instance is not asked again", n)
	}
}

// emailKeys is an events.EmailKeyer that keys an email by itself.
type emailKeys struct{}

func (emailKeys) EmailKey(email string) string { return "email:" + email }

// A wait whose emails' index entries share the uid's partition is one
// request of peer.RouteVisible; one with an email elsewhere asks once per
// key; and an instance that does not know the route (404), or places the
// keys otherwise (400), gets the requests of each key instead, so that
// neither answer counts as seen.
func TestWaitVisibleAsksOnceWhereTheKeysShareAPartition(t *testing.T) {
	partition := map[string]int32{"u1": 3, "email:same@b.c": 3, "email:other@b.c": 5}
	for _, tc := range []struct {
		name   string
		emails []string
		// visible is what the instance answers a request of the route.
		visible int
		want    []string // the paths asked, in any order
	}{
		{"colocated", []string{"same@b.c"}, http.StatusNoContent, []string{"/internal/visible/u1?email=same%40b.c&minVersion=7"}},
		{"no email", nil, http.StatusNoContent, []string{"/internal/visible/u1?minVersion=7"}},
		{"an email elsewhere", []string{"same@b.c", "other@b.c"}, http.StatusNoContent, []string{
			"/api/profile/u1?minVersion=7",
			"/api/search?email=same%40b.c&minVersion=7&uid=u1",
			"/api/search?email=other%40b.c&minVersion=7&uid=u1",
		}},
		{"an older query-svc", []string{"same@b.c"}, http.StatusNotFound, []string{
			"/internal/visible/u1?email=same%40b.c&minVersion=7",
			"/api/profile/u1?minVersion=7",
			"/api/search?email=same%40b.c&minVersion=7&uid=u1",
		}},
		{"a query-svc that places the keys otherwise", []string{"same@b.c"}, http.StatusBadRequest, []string{
			"/internal/visible/u1?email=same%40b.c&minVersion=7",
			"/api/profile/u1?minVersion=7",
			"/api/search?email=same%40b.c&minVersion=7&uid=u1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				asked = append(asked, r.URL.RequestURI())
				mu.Unlock()
				if strings.HasPrefix(r.URL.Path, "/internal/") {
					w.WriteHeader(tc.visible)
					return
				}
				w.WriteHeader(http.StatusOK)
			}))
			defer srv.Close()
			v := &QueryVisibility{BaseURLs: []string{srv.URL}, Client: srv.Client(), Timeout: 5 * time.Second,
				PartitionOf: func(key string) int32 { return partition[key] }, EmailKey: emailKeys{}}
			if err := v.WaitVisible(context.Background(), "u1", 7, tc.emails); err != nil {
				t.Fatalf("WaitVisible: %v", err)
			}
			slices.Sort(asked)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(asked, want) {
				t.Fatalf("asked\n%s\nwant\n%s", strings.Join(asked, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
