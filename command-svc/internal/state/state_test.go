package state

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"profiles/events"
	"profiles/platform/pii"
)

// testCodec is a codec without keys: the tests fold events in clear.
func testCodec() *pii.Codec {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	return pii.NewCodec(kek, nil)
}

func TestApplyIsIdempotentByVersion(t *testing.T) {
	s := NewStore(slog.Default(), testCodec(), "claims")
	created := events.New("e1", events.Profile{}, "u", events.ProfileCreated{Username: "bob", Email: "b@m.c"}, time.Unix(0, 0))
	for range 2 {
		if err := s.Apply(created); err != nil {
			t.Fatal(err)
		}
	}
	changed := events.New("e2", s.Get("u"), "u", events.UsernameChanged{Username: "rob"}, time.Unix(1, 0))
	if err := s.Apply(changed); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(created); err != nil { // a late redelivery
		t.Fatal(err)
	}
	if got := s.Get("u"); got.Version != 2 || got.Username != "rob" {
		t.Fatalf("state = %+v", got)
	}
}

func TestLockSerializesOneProfile(t *testing.T) {
	s := NewStore(slog.Default(), testCodec(), "claims")
	var (
		wg      sync.WaitGroup
		inside  int
		maxSeen int
		mu      sync.Mutex
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := s.Lock("u")
			mu.Lock()
			inside++
			maxSeen = max(maxSeen, inside)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxSeen != 1 {
		t.Fatalf("%d commands held the lock at once", maxSeen)
	}
	if len(s.locks) != 0 {
		t.Fatalf("idle locks left behind: %d", len(s.locks))
	}
}

func TestPutClaimNeverGoesBack(t *testing.T) {
	s := NewStore(slog.Default(), testCodec(), "claims")
	s.PutClaim("a@b.c", events.Claim{UID: "u2", Seq: 2})
	s.PutClaim("a@b.c", events.Claim{UID: "u1", Seq: 1})
	if c, ok := s.Claim("a@b.c"); !ok || c.UID != "u2" {
		t.Fatalf("claim = %+v %v", c, ok)
	}
	s.PutClaim("a@b.c", events.Claim{Seq: 3, Released: true})
	if _, ok := s.Claim("a@b.c"); ok || s.ClaimSeq("a@b.c") != 3 {
		t.Fatal("a released claim is still live")
	}
}
