package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"profiles/deploy/internal/lincheck"
)

// linLoad is Jepsen's workload on a system: clients, each one sequential
// process, read and write a few profiles through the front door at random,
// and every call and answer goes into a history that lincheck checks.
type linLoad struct {
	t       *testing.T
	s       *System
	h       *lincheck.History
	uids    []string
	emails  map[string]string
	clients int

	stop chan struct{}
	wg   sync.WaitGroup
}

// startLinLoad creates profiles profiles, then starts clients clients on
// them. One profile, the last, may also be deleted by any client.
func startLinLoad(t *testing.T, s *System, profiles, clients int) *linLoad {
	t.Helper()
	l := &linLoad{t: t, s: s, h: lincheck.NewHistory(), emails: map[string]string{}, clients: clients, stop: make(chan struct{})}
	setup := l.client(clients)
	for i := range profiles {
		email := fmt.Sprintf("lin%d-%d@mail.com", i, rand.IntN(1e9))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		uid, err := setup.Create(ctx, fmt.Sprintf("p%d-v1", i), email)
		cancel()
		if err != nil {
			t.Fatalf("create profile %d: %v", i, err)
		}
		l.uids = append(l.uids, uid)
		l.emails[uid] = email
	}
	for c := range clients {
		l.wg.Add(1)
		go l.run(l.client(c))
	}
	return l
}

func (l *linLoad) client(id int) *lincheck.Client {
	// Longer than ROUTE_WAIT (30s in the harness), so that an answer the
	// system gives is seen rather than cut off.
	return &lincheck.Client{ID: id, Base: l.s.URL, HTTP: &http.Client{Timeout: 45 * time.Second}, History: l.h}
}

// run is one client: a random operation on a random profile, then a short
// pause, until stopped. A PUT carries If-Match of the last version this
// client saw of the profile half of the time.
func (l *linLoad) run(c *lincheck.Client) {
	defer l.wg.Done()
	seen := map[string]int64{}
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		case <-time.After(time.Duration(5+rand.IntN(20)) * time.Millisecond):
		}
		uid := l.uids[rand.IntN(len(l.uids))]
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
		var out lincheck.Output
		switch r := rand.IntN(100); {
		case r < 55:
			out = c.Get(ctx, uid)
		case r < 97 || uid != l.uids[len(l.uids)-1]:
			var ifMatch int64
			if rand.IntN(2) == 0 {
				ifMatch = seen[uid]
			}
			out = c.Put(ctx, uid, fmt.Sprintf("c%d-%d", c.ID, n), l.emails[uid], ifMatch)
		default:
			out = c.Delete(ctx, uid, 0)
		}
		cancel()
		if out.Version > 0 {
			seen[uid] = out.Version
		}
	}
}

// Check stops the clients and checks the history; it fails the test unless
// the history is linearizable and large enough to mean something. A
// history that is not linearizable is also written as porcupine's HTML
// view, next to the test binary's temporary files, and its operations on
// the offending profiles are logged.
func (l *linLoad) Check(minOps int) lincheck.Result {
	l.t.Helper()
	close(l.stop)
	l.wg.Wait()
	html := filepath.Join(os.TempDir(), "lincheck-"+strings.ReplaceAll(l.t.Name(), "/", "-")+".html")
	res, err := l.h.Check(2*time.Minute, html)
	if err != nil {
		l.t.Errorf("writing the visualization: %v", err)
	}
	l.t.Logf("history: %s", res)
	switch {
	case len(res.Illegal) > 0:
		l.t.Errorf("the history is not linearizable (porcupine's view: %s):\n%s", html, res.Detail)
	case !res.Ok():
		l.t.Errorf("the checker could not decide: %s", res)
	}
	known := res.Ops - res.Unknown
	if known < minOps || res.ByKind["put 200"] == 0 || res.ByKind["get 200"] == 0 {
		l.t.Errorf("only %d operations with a known outcome (want %d, with successful reads and writes): %s", known, minOps, res)
	}
	return res
}

// TestLinearizableHistory: concurrent clients through the front door, no
// faults. Every answer must be explained by one register per profile.
func TestLinearizableHistory(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Command: 2})
	l := startLinLoad(t, s, 6, 8)
	time.Sleep(15 * time.Second)
	l.Check(300)
}

// TestLinearizableHistoryWhileFrozen freezes one instance of each service
// in turn with SIGSTOP, for longer than its session timeout (6s in the
// harness), while the clients run, then resumes it: its partitions move to
// the other instance meanwhile, and the frozen one wakes up believing it
// still owns them. The one history must stay linearizable through every
// hand-over.
func TestLinearizableHistoryWhileFrozen(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Command: 2, Projector: 2})
	l := startLinLoad(t, s, 8, 8)
	time.Sleep(4 * time.Second)
	for _, kind := range []string{"command-svc", "query-svc", "projector"} {
		frozen := kind + "-0"
		s.Pause(frozen)
		resumed := false
		t.Cleanup(func() {
			if !resumed {
				s.Resume(frozen) // a stopped process ignores SIGTERM
			}
		})
		t.Logf("froze %s", frozen)
		time.Sleep(10 * time.Second)
		s.Resume(frozen)
		resumed = true
		t.Logf("resumed %s", frozen)
		time.Sleep(8 * time.Second)
	}
	l.Check(400)
}
