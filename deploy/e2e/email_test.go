package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// 50 concurrent POSTs with one email, through different instances: one
// profile gets it.
func TestEmailRaceHasExactlyOneWinner(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: 12})
	vias := append(s.Instances("command-svc"), "frontdoor")
	count := racing(50, func(i int) int {
		// The case differs: the claim is on the normalized email.
		email := "Race@Mail.com"
		if i%2 == 1 {
			email = "race@mail.COM"
		}
		return s.DoAt(vias[i%len(vias)], http.MethodPost, "/api/profile",
			map[string]string{"username": fmt.Sprintf("u%d", i), "email": email}, nil).Status
	})
	if count[http.StatusCreated] != 1 || count[http.StatusConflict] != 49 {
		t.Fatalf("statuses %v; want one 201 and 49 409", count)
	}
	if found := s.search("race@mail.com"); len(found) != 1 {
		t.Fatalf("search finds %v", found)
	}
}

// A changed email and a deleted profile free their emails; two profiles
// can swap emails through an intermediate one; a PUT to a taken email is
// refused.
func TestEmailsAreFreedAndCanBeSwapped(t *testing.T) {
	s := StartSystem(t, Options{Command: 2, Partitions: 12})
	create := func(email string) profile {
		t.Helper()
		var p profile
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "u", "email": email}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", email, r.Status, r.Body)
		}
		r.JSON(t, &p)
		return p
	}
	put := func(p profile, email string) int {
		t.Helper()
		return s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "u", "email": email}, nil).Status
	}
	a, b := create("a@mail.com"), create("b@mail.com")
	if st := put(b, "A@mail.com"); st != http.StatusConflict {
		t.Fatalf("PUT to a taken email = %d", st)
	}
	// Swap through an intermediate email.
	for _, step := range []struct {
		p     profile
		email string
	}{{a, "tmp@mail.com"}, {b, "a@mail.com"}, {a, "b@mail.com"}} {
		if st := put(step.p, step.email); st != http.StatusOK {
			t.Fatalf("PUT %s = %d", step.email, st)
		}
	}
	if found := s.search("a@mail.com"); len(found) != 1 || found[0] != b.UID {
		t.Fatalf("a@mail.com is held by %v, want %s", found, b.UID)
	}
	// The intermediate email was freed by the change.
	c := create("tmp@mail.com")
	// A deleted profile frees its email.
	if r := s.Do(http.MethodDelete, "/api/profile/"+c.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d", r.Status)
	}
	create("tmp@mail.com")
	if r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "x", "email": "b@mail.com"}, nil); r.Status != http.StatusConflict {
		t.Fatalf("POST with a held email = %d", r.Status)
	}
}

// Kill command-svc between an email claim and its event (a test-only fault
// hook): the email is not locked forever, and another profile gets it once
// the claim's lease has passed.
func TestCrashBetweenClaimAndEventDoesNotLockTheEmail(t *testing.T) {
	s := StartSystem(t, Options{Command: 2, Partitions: 4, Env: map[string]string{"CLAIM_LEASE": "2s"}})
	victim := "command-svc-1"
	s.Stop(victim)
	s.SetEnv(victim, "FAULT_EXIT_AFTER_CLAIM", "1")
	s.Start(victim)
	s.WaitReady(victim)

	// POST through the victim until one claims its email on the other
	// instance: the victim then exits before it appends the event. Each POST
	// has an Idempotency-Key, so its uid comes from the key, not from the
	// email's partition (app.ColocatedUID), and its claim may be remote.
	var email string
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; ; i++ {
		if i == 40 {
			t.Fatalf("no POST ran on %s", victim)
		}
		email = fmt.Sprintf("crash%d@mail.com", i)
		req, err := http.NewRequest(http.MethodPost, s.URLOf(victim)+"/api/profile",
			strings.NewReader(fmt.Sprintf(`{"username":"c","email":%q}`, email)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("crash-%d-%d", time.Now().UnixNano(), i))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		if s.Exited(victim) || err != nil {
			break
		}
	}
	for deadline := time.Now().Add(5 * time.Second); !s.Exited(victim); {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not exit after its claim", victim)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Kill(victim) // reap it
	crashed := time.Now()

	// The email's claim has no profile behind it. Once the victim's
	// partitions have moved and the lease has passed, it can be taken.
	var got int
	for deadline := time.Now().Add(45 * time.Second); ; {
		r := s.DoAt("command-svc-0", http.MethodPost, "/api/profile", map[string]string{"username": "next", "email": email}, nil)
		if got = r.Status; got == http.StatusCreated {
			break
		}
		if got != http.StatusConflict && got != http.StatusServiceUnavailable {
			t.Fatalf("POST %s = %d %s", email, got, r.Body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still refused (%d) 45s after the crash", email, got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s was claimed again %v after the crash", email, time.Since(crashed).Round(100*time.Millisecond))
	if found := s.search(email); len(found) != 1 {
		t.Fatalf("search %s = %v", email, found)
	}
}
