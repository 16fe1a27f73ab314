package view_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/query-svc/internal/view"
)

const topic = "profile-snapshots"

func open(t *testing.T, fs vfs.FS) *view.Store {
	t.Helper()
	s, err := view.Open("view", fs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func profile(uid, email string, v int64) events.Profile {
	return events.Profile{UID: uid, Username: "u-" + uid, Email: email, Version: v, CreatedAt: time.Unix(1, 0).UTC(), UpdatedAt: time.Unix(1, 0).UTC()}
}

func uids(ps []events.Profile) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.UID)
	}
	return out
}

func TestApplyGetSearch(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()

	if _, err := s.Apply(topic, 0, []events.Profile{profile("a", "Bob@Mail.com", 1), profile("b", "bob@mail.com", 1)}, 2); err != nil {
		t.Fatal(err)
	}
	got, err := s.SearchEmail(" BOB@mail.COM")
	if err != nil || len(got) != 2 {
		t.Fatalf("search by normalized email = %v, %v", uids(got), err)
	}

	// The email of a moves: the old index entry must go.
	if _, err := s.Apply(topic, 0, []events.Profile{profile("a", "alice@mail.com", 2)}, 3); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SearchEmail("bob@mail.com"); len(got) != 1 || got[0].UID != "b" {
		t.Fatalf("after email change, old email finds %v", uids(got))
	}
	if got, _ := s.SearchEmail("alice@mail.com"); len(got) != 1 || got[0].Version != 2 {
		t.Fatalf("new email finds %+v", got)
	}

	// A tombstone removes b from search and leaves a deleted marker.
	if _, err := s.Apply(topic, 0, []events.Profile{{UID: "b", Version: 2, Deleted: true}}, 4); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SearchEmail("bob@mail.com"); len(got) != 0 || got == nil {
		t.Fatalf("deleted profile still found: %v (nil=%v)", uids(got), got == nil)
	}
	if p, err := s.Get("b"); err != nil || !p.Deleted || p.Version != 2 || p.Exists() {
		t.Fatalf("Get(deleted) = %+v, %v", p, err)
	}
	if _, err := s.Get("never"); !errors.Is(err, view.ErrNotFound) {
		t.Fatalf("Get(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestApplyIgnoresOlderRecords(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	// Within one batch and across batches, an older version never wins.
	n, err := s.Apply(topic, 1, []events.Profile{profile("a", "new@mail.com", 3), profile("a", "old@mail.com", 2)}, 10)
	if err != nil || n != 1 {
		t.Fatalf("applied %d, %v; want 1", n, err)
	}
	if p, _ := s.Get("a"); p.Version != 3 || p.Email != "new@mail.com" {
		t.Fatalf("Get = %+v", p)
	}
	if got, _ := s.SearchEmail("old@mail.com"); len(got) != 0 {
		t.Fatal("stale record reached the email index")
	}
}

func TestOffsetsSurviveReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := open(t, fs)
	if _, ok, _ := s.Offset(topic, 3); ok {
		t.Fatal("fresh view claims an offset")
	}
	if _, err := s.Apply(topic, 3, []events.Profile{profile("a", "a@mail.com", 1)}, 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, fs)
	defer s.Close()
	off, ok, err := s.Offset(topic, 3)
	if err != nil || !ok || off != 42 {
		t.Fatalf("Offset after reopen = %d, %v, %v", off, ok, err)
	}
	if _, ok, _ := s.Offset("other-topic", 3); ok {
		t.Fatal("offsets of another topic leak")
	}
	if p, err := s.Get("a"); err != nil || p.Email != "a@mail.com" {
		t.Fatalf("data after reopen = %+v, %v", p, err)
	}
}

func TestChangedIsClosedByApply(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any Apply")
	default:
	}
	if _, err := s.Apply(topic, 0, nil, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Apply did not signal")
	}
}
