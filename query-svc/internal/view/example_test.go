package view_test

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/query-svc/internal/view"
)

// A batch of snapshot records and the partition's next offset land together.
func ExampleStore_Apply() {
	s, _ := view.Open("view", vfs.NewMem())
	defer s.Close()
	_, _ = s.Apply("profile-snapshots", 0, []events.Profile{
		{UID: "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", Username: "bob", Email: "bob1@mail.com", Version: 1},
	}, 1)
	found, _ := s.SearchEmail("BOB1@mail.com")
	next, _, _ := s.Offset("profile-snapshots", 0)
	fmt.Println(len(found), found[0].Username, next)
	// Output: 1 bob 1
}
