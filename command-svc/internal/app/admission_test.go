package app_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/events"
)

// TestAdmissionBound runs sequences of admits and releases against an
// Admission and checks each answer and the count in flight after it.
func TestAdmissionBound(t *testing.T) {
	type step struct {
		op           string // "admit", or "release N": the release of the N-th admit (0-based)
		wantRefused  bool   // for admit: ErrOverloaded
		wantInFlight int
	}
	admit := func(refused bool, n int) step { return step{"admit", refused, n} }
	release := func(i, n int) step { return step{op: "release " + string(rune('0'+i)), wantInFlight: n} }
	tests := []struct {
		name  string
		limit int
		steps []step
	}{
		{"up to the limit, then refused", 2, []step{admit(false, 1), admit(false, 2), admit(true, 2), admit(true, 2)}},
		{"a release frees one place", 2, []step{admit(false, 1), admit(false, 2), admit(true, 2), release(0, 1), admit(false, 2), admit(true, 2)}},
		{"a refusal takes no place", 1, []step{admit(false, 1), admit(true, 1), release(0, 0), admit(false, 1)}},
		{"a second release changes nothing", 2, []step{admit(false, 1), admit(false, 2), release(0, 1), release(0, 1), admit(false, 2), admit(true, 2)}},
		{"a limit of one serializes", 1, []step{admit(false, 1), release(0, 0), admit(false, 1), release(1, 0), admit(false, 1)}},
		{"zero means no limit", 0, []step{admit(false, 1), admit(false, 2), admit(false, 3), release(1, 2), release(0, 1)}},
		{"a negative limit means no limit", -5, []step{admit(false, 1), admit(false, 2), admit(false, 3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := app.NewAdmission(tt.limit)
			var releases []func()
			for i, s := range tt.steps {
				if s.op == "admit" {
					rel, err := a.Admit()
					switch {
					case s.wantRefused && !errors.Is(err, app.ErrOverloaded):
						t.Fatalf("step %d: admit = %v, want ErrOverloaded", i, err)
					case !s.wantRefused && err != nil:
						t.Fatalf("step %d: admit = %v, want admitted", i, err)
					case err == nil:
						releases = append(releases, rel)
					}
				} else {
					releases[int(s.op[len(s.op)-1]-'0')]()
				}
				if got := a.InFlight(); got != s.wantInFlight {
					t.Fatalf("step %d (%s): %d in flight, want %d", i, s.op, got, s.wantInFlight)
				}
			}
		})
	}
}

// Many goroutines admitting and releasing at once never have more than
// the limit in flight, and end with none.
func TestAdmissionHoldsUnderConcurrency(t *testing.T) {
	const limit, workers, rounds = 8, 32, 2000
	a := app.NewAdmission(limit)
	var inside, most, admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				release, err := a.Admit()
				if err != nil {
					refused.Add(1)
					continue
				}
				admitted.Add(1)
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				inside.Add(-1)
				release()
			}
		}()
	}
	wg.Wait()
	if most.Load() > limit {
		t.Fatalf("%d writes were in flight at once, limit %d", most.Load(), limit)
	}
	if a.InFlight() != 0 || admitted.Load()+refused.Load() != workers*rounds || admitted.Load() == 0 {
		t.Fatalf("in flight %d after all released; %d admitted, %d refused", a.InFlight(), admitted.Load(), refused.Load())
	}
}

// probeLog is an EventLog that records how many writes were in flight
// while each append ran.
type probeLog struct {
	memLog
	adm      *app.Admission
	inFlight []int
}

func (l *probeLog) Append(ctx context.Context, claims []app.ClaimRecord, es ...events.Event) error {
	l.inFlight = append(l.inFlight, l.adm.InFlight())
	return l.memLog.Append(ctx, claims, es...)
}

// probeVisibility records how many writes were in flight while each wait
// for readers ran.
type probeVisibility struct {
	memVisibility
	adm      *app.Admission
	inFlight []int
}

func (v *probeVisibility) WaitVisible(ctx context.Context, uid string, version int64, emails []string) error {
	v.inFlight = append(v.inFlight, v.adm.InFlight())
	return v.memVisibility.WaitVisible(ctx, uid, version, emails)
}

// probeClaims records how many writes were in flight while each release
// of an email (an append of its own) ran.
type probeClaims struct {
	memClaims
	adm      *app.Admission
	inFlight []int
}

func (c *probeClaims) Release(ctx context.Context, email, uid string) error {
	c.inFlight = append(c.inFlight, c.adm.InFlight())
	return c.memClaims.Release(ctx, email, uid)
}

// A command holds its place while it appends (its events, and then the
// release of an email it let go), and not while it waits for readers.
func TestCommandHoldsItsPlaceUntilItsAppendsAreOver(t *testing.T) {
	f := newFixture(t)
	adm := app.NewAdmission(4)
	log := &probeLog{adm: adm}
	vis := &probeVisibility{adm: adm}
	claims := &probeClaims{memClaims: memClaims{held: map[string]string{}}, adm: adm}
	f.deps.Admission, f.deps.Events, f.deps.Visibility, f.deps.Claims = adm, log, vis, claims
	ctx := context.Background()
	res, err := app.CreateProfileHandler{Deps: f.deps}.Handle(ctx, app.CreateProfile{Caller: admin, Username: "bob", Email: "bob1@mail.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (app.ChangeProfileHandler{Deps: f.deps}).Handle(ctx, app.ChangeProfile{Caller: admin, UID: res.Profile.UID, Username: "bob", Email: "bob2@mail.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := (app.DeleteProfileHandler{Deps: f.deps}).Handle(ctx, app.DeleteProfile{Caller: admin, UID: res.Profile.UID}); err != nil {
		t.Fatal(err)
	}
	for i, n := range log.inFlight {
		if n != 1 {
			t.Errorf("append %d ran with %d writes in flight, want 1 (itself)", i, n)
		}
	}
	for i, n := range claims.inFlight {
		if n != 1 {
			t.Errorf("email release %d ran with %d writes in flight, want 1 (itself)", i, n)
		}
	}
	for i, n := range vis.inFlight {
		if n != 0 {
			t.Errorf("wait for readers %d ran with %d writes in flight, want 0", i, n)
		}
	}
	if len(log.inFlight) != 3 || len(claims.inFlight) != 2 || len(vis.inFlight) != 3 || adm.InFlight() != 0 {
		t.Fatalf("%d appends, %d releases, %d waits, %d in flight at the end", len(log.inFlight), len(claims.inFlight), len(vis.inFlight), adm.InFlight())
	}
}

// A command gives its place back whatever its outcome.
func TestCommandGivesItsPlaceBackOnEveryOutcome(t *testing.T) {
	tests := []struct {
		name    string
		run     func(f *fixture, uid string) error
		wantErr error
	}{
		{"applied", func(f *fixture, uid string) error {
			_, err := app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: uid, Username: "rob", Email: "bob1@mail.com"})
			return err
		}, nil},
		{"nothing to append", func(f *fixture, uid string) error {
			_, err := app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: uid, Username: "bob", Email: "bob1@mail.com"})
			return err
		}, nil},
		{"not found", func(f *fixture, _ string) error {
			_, err := app.DeleteProfileHandler{Deps: f.deps}.Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: "never-created"})
			return err
		}, app.ErrNotFound},
		{"precondition failed", func(f *fixture, uid string) error {
			_, err := app.DeleteProfileHandler{Deps: f.deps}.Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: uid, IfMatch: app.IfMatch{Set: true, Versions: []int64{7}}})
			return err
		}, app.ErrPrecondition},
		{"append failed", func(f *fixture, uid string) error {
			f.log.failAt = 2
			_, err := app.DeleteProfileHandler{Deps: f.deps}.Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: uid})
			return err
		}, app.ErrAppend},
		{"email taken", func(f *fixture, _ string) error {
			_, err := app.CreateProfileHandler{Deps: f.deps}.Handle(context.Background(), app.CreateProfile{Caller: admin, Username: "eve", Email: "bob1@mail.com"})
			return err
		}, app.ErrEmailTaken},
		{"not the owner", func(f *fixture, uid string) error {
			_, err := app.DeleteProfileHandler{Deps: f.deps}.Handle(context.Background(), app.DeleteProfile{Caller: app.Caller{Subject: "someone"}, UID: uid})
			return err
		}, app.ErrNotOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			p := f.create(t)
			adm := app.NewAdmission(1)
			f.deps.Admission = adm
			err := tt.run(f, p.UID)
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if adm.InFlight() != 0 {
				t.Fatalf("%d writes in flight after the command", adm.InFlight())
			}
		})
	}
}

// With the bound reached, every command is refused at once and does
// nothing: no claim, no append, no wait for readers, no change of state.
func TestOverloadedCommandsDoNothing(t *testing.T) {
	tests := []struct {
		name string
		run  func(d app.Deps, uid string) error
	}{
		{"create", func(d app.Deps, _ string) error {
			_, err := app.CreateProfileHandler{Deps: d}.Handle(context.Background(), app.CreateProfile{Caller: admin, Username: "amy", Email: "amy@mail.com"})
			return err
		}},
		{"idempotent create", func(d app.Deps, _ string) error {
			_, err := app.CreateProfileHandler{Deps: d}.Handle(context.Background(), app.CreateProfile{Caller: admin, UID: app.UIDForKey("k"), Idempotent: true, Username: "amy", Email: "amy@mail.com"})
			return err
		}},
		{"change", func(d app.Deps, uid string) error {
			_, err := app.ChangeProfileHandler{Deps: d}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: uid, Username: "rob", Email: "rob@mail.com"})
			return err
		}},
		{"delete", func(d app.Deps, uid string) error {
			_, err := app.DeleteProfileHandler{Deps: d}.Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: uid})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			p := f.create(t)
			claims := &memClaims{held: map[string]string{"bob1@mail.com": p.UID}}
			f.deps.Claims = claims
			adm := app.NewAdmission(2)
			f.deps.Admission = adm
			for range 2 {
				if _, err := adm.Admit(); err != nil { // two writes elsewhere, still in flight
					t.Fatal(err)
				}
			}
			appended, waited := len(f.log.appended), len(f.vis.waited)
			if err := tt.run(f.deps, p.UID); !errors.Is(err, app.ErrOverloaded) {
				t.Fatalf("err = %v, want ErrOverloaded", err)
			}
			if len(f.log.appended) != appended || len(f.log.claims) != 0 || len(f.vis.waited) != waited || len(claims.held) != 1 {
				t.Fatalf("an overloaded command left traces: log %v, claims %v, waits %v", f.log.appended[appended:], claims.held, f.vis.waited[waited:])
			}
			if got := mustGet(t, f.states, p.UID); got != p {
				t.Fatalf("state %+v, want %+v", got, p)
			}
			if adm.InFlight() != 2 {
				t.Fatalf("%d in flight, want the 2 admitted before", adm.InFlight())
			}
		})
	}
}

// A command that waits for its profile's lock is in flight already: a
// hot profile cannot queue more writes than the bound.
func TestCommandWaitingForItsLockIsInFlight(t *testing.T) {
	f := newFixture(t)
	p := f.create(t)
	adm := app.NewAdmission(1)
	f.deps.Admission = adm
	unlock := f.states.Lock(p.UID) // another command on p holds it
	done := make(chan error, 1)
	go func() {
		_, err := app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: p.UID, Username: "rob", Email: "bob1@mail.com"})
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); adm.InFlight() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the waiting command was never admitted")
		}
	}
	if _, err := (app.DeleteProfileHandler{Deps: f.deps}).Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: "other"}); !errors.Is(err, app.ErrOverloaded) {
		t.Fatalf("a second command while one waits for its lock: %v, want ErrOverloaded", err)
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if adm.InFlight() != 0 {
		t.Fatalf("%d in flight at the end", adm.InFlight())
	}
}
