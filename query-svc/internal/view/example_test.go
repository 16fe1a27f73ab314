package view_test

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/query-svc/internal/view"
)

// A batch of snapshot records and its partition's next offset land together.
func ExampleStore_ApplySnapshots() {
	s, _ := view.Open("view", vfs.NewMem(), 12, normalized{}, view.Options{})
	defer s.Close()
	uid := "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"
	p := s.Partition(uid)
	_, _ = s.ApplySnapshots("profile-snapshots", p, []events.Profile{
		{UID: uid, Username: "bob", Email: "bob1@mail.com", Version: 1},
	}, 1)
	got, _ := s.Get(uid)
	next, _, _ := s.Offset("profile-snapshots", p)
	fmt.Println(got.Username, p, next)
	// Output: bob 6 1
}
