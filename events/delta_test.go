package events_test

import (
	"testing"

	"profiles/events"
)

func TestEmailDelta(t *testing.T) {
	live := events.Profile{UID: uid, Username: "bob", Email: "Bob1@Mail.com", Version: 1}
	renamed := live
	renamed.Username, renamed.Version = "rob", 2
	moved := live
	moved.Email, moved.Version = "bob2@mail.com", 2
	recased := live
	recased.Email, recased.Version = " bob1@mail.COM ", 2
	deleted := events.Profile{UID: uid, Version: 2, Deleted: true}

	tests := []struct {
		name         string
		prev, next   events.Profile
		gained, lost string
	}{
		{"nothing to nothing", events.Profile{}, events.Profile{}, "", ""},
		{"create gains the email", events.Profile{}, live, "bob1@mail.com", ""},
		{"username change keeps it", live, renamed, "", ""},
		{"email change gains one and loses one", live, moved, "bob2@mail.com", "bob1@mail.com"},
		{"case and space change keeps it", live, recased, "", ""},
		{"delete loses it", live, deleted, "", "bob1@mail.com"},
		{"a deleted profile holds nothing", deleted, deleted, "", ""},
		{"unchanged keeps it", live, live, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gained, lost := events.EmailDelta(tt.prev, tt.next)
			if gained != tt.gained || lost != tt.lost {
				t.Fatalf("EmailDelta = (%q, %q), want (%q, %q)", gained, lost, tt.gained, tt.lost)
			}
		})
	}
}
