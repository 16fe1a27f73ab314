package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"profiles/deploy/internal/lincheck"
	"profiles/platform/clock"
)

// skewClock starts instance name again with the test-only clock hook
// (platform/clock): its wall clock is the real one plus the duration in
// the returned file, which the test rewrites while it runs.
func skewClock(t *testing.T, s *System, names ...string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, name := range names {
		s.Stop(name)
		files[name] = filepath.Join(s.dir, name+".clock-skew")
		if err := os.WriteFile(files[name], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		s.SetEnv(name, clock.SkewFileEnv, files[name])
		s.Start(name)
	}
	s.WaitReady(names...)
	return files
}

func setSkew(t *testing.T, files map[string]string, d string) {
	t.Helper()
	for _, f := range files {
		if err := os.WriteFile(f, []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// raceForEmails creates profiles two at a time with one email each pair,
// until the load stops: contested email claims while clocks step. Each
// create answered 2xx is checked like the writers' (history, final read).
func (l *faultLoad) raceForEmails() {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i := 0; !l.stopped(); i++ {
			email := fmt.Sprintf("race%d@clock.example", i)
			var wg sync.WaitGroup
			for c := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := &profile{Username: fmt.Sprintf("race%d-%d", i, c), Email: email}
					a := l.do(http.MethodPost, "/api/profile", map[string]string{"username": p.Username, "email": p.Email})
					if a.status == http.StatusConflict {
						return // the email is taken: an answer, nothing written
					}
					if !l.acknowledged(a) {
						return
					}
					var got struct {
						UID     string `json:"uid"`
						Version int64  `json:"version"`
					}
					if json.Unmarshal(a.body, &got) != nil || got.UID == "" {
						l.t.Errorf("POST answered %d without a uid: %s", a.status, a.body)
						return
					}
					p.UID, p.Version = got.UID, got.Version
					l.record(l.writers+50+c, lincheck.Input{Kind: lincheck.Create, UID: p.UID, Username: p.Username, Email: p.Email}, a)
					l.ack(p.UID, p.Version, p)
				}()
			}
			wg.Wait()
			time.Sleep(20 * time.Millisecond)
		}
	}()
}

// checkEmailsUnique fails if two live profiles of the event log share an
// email, and returns how many live profiles it checked.
func checkEmailsUnique(t *testing.T, s *System) int {
	t.Helper()
	by := map[string][]string{}
	live := 0
	for uid, p := range foldEventLog(t, s) {
		if !p.Deleted && p.Version > 0 {
			live++
			by[strings.ToLower(p.Email)] = append(by[strings.ToLower(p.Email)], uid)
		}
	}
	for email, uids := range by {
		if len(uids) > 1 {
			t.Errorf("%d live profiles hold the email %s: %v", len(uids), email, uids)
		}
	}
	return live
}

// Scenario 13: the wall clocks of a command-svc and a query-svc instance
// step 5 minutes forward, then 5 minutes back (10 minutes at once), then
// back to the truth, under load and with pairs of clients racing for one
// email. The lease (kafkax/lease.go) measures with the monotonic clock,
// and the email claims' lease too (app.ClaimAges): neither may move, no
// acknowledged write may be lost, the history must stay linearizable, no
// two live profiles may share an email, and writes must go on.
func TestFaultClockSteps(t *testing.T) {
	needCluster(t)
	s := startFaultSystem(t)
	victims := []string{"command-svc-0", "query-svc-0"}
	files := skewClock(t, s, victims...)
	l := newFaultLoad(t, s)
	l.Start(6, 2)
	l.raceForEmails()
	time.Sleep(3 * time.Second)
	l.Mark("step the wall clocks of command-svc-0 and query-svc-0 5 minutes forward")
	setSkew(t, files, "5m")
	time.Sleep(10 * time.Second)
	l.Mark("step them 10 minutes back (5 minutes behind)")
	setSkew(t, files, "-5m")
	time.Sleep(10 * time.Second)
	l.Mark("step them back to the true time")
	setSkew(t, files, "")
	if !l.WaitWrites(10, 60*time.Second) {
		t.Error("writes did not resume within 60 s after the clocks were set right")
	}
	time.Sleep(2 * time.Second)
	l.Stop()
	for _, name := range victims {
		if n := strings.Count(s.logOf(name), "wall clock stepped"); n < 3 {
			t.Errorf("%s logged %d clock steps, want 3: the clock hook did not take effect", name, n)
		}
	}
	live := checkEmailsUnique(t, s)
	row := l.Verify("13. the wall clocks of a command-svc and a query-svc instance stepped +5 min, then -5 min, for 10 s each",
		fmt.Sprintf("the clocks stepped through the test-only hook PROFILES_CLOCK_SKEW_FILE (platform/clock); leases and email claims' leases are monotonic; %d live profiles, no email held twice (pairs of clients raced for one email throughout)", live))
	if row.Window > 20*time.Second {
		t.Errorf("no write was acknowledged for %s; the clock steps must not stop writes", row.Window)
	}
}
