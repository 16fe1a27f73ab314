package view_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/query-svc/internal/view"
)

// GetJSON answers with exactly what encoding the profile Get returns
// would give, for any content of its strings, and never with a deleted
// profile.
func TestGetJSONIsTheProfilesJSON(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	at := time.Date(2026, 12, 5, 21, 0, 0, 123456789, time.FixedZone("x", 3600))
	tricky := []string{``, `plain`, `quo"te`, `back\slash\`, `ends with \"`, `,"version":99,"createdAt":"`, `"}`, `","deleted":true}`,
		`<b>&amp;</b>`, "line\nbreak\ttab\x01", "ünïcødé 😀", "\u2028\u2029", `{"uid":"`}
	for i, str := range tricky {
		p := events.Profile{UID: "u" + string(rune('a'+i)), Username: str, DisplayName: str, Email: str + "@x.org",
			Version: int64(i*1000 + 7), CreatedAt: at, UpdatedAt: at.Add(time.Duration(i) * time.Second)}
		if _, err := s.ApplySnapshots(snapshots, s.Partition(p.UID), []events.Profile{p}, 1); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetJSON(p.UID, []byte("prefix:"))
		if err != nil {
			t.Fatal(err)
		}
		dec, err := s.Get(p.UID)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(dec)
		if !bytes.Equal(got.JSON, append([]byte("prefix:"), want...)) || got.Version != p.Version || got.Deleted {
			t.Fatalf("%q: GetJSON = %s v%d deleted %v, want %s v%d", str, got.JSON, got.Version, got.Deleted, want, p.Version)
		}
	}

	// A newer version replaces the answer; a delete ends it.
	p := profile("z", "z@x.org", 1)
	put(t, s, p)
	p.Username, p.Version = "renamed", 2
	put(t, s, p)
	if got, _ := s.GetJSON("z", nil); got.Version != 2 || !bytes.Contains(got.JSON, []byte(`"username":"renamed"`)) {
		t.Fatalf("after the rename: %s v%d", got.JSON, got.Version)
	}
	put(t, s, events.Profile{UID: "z", Version: 3, Deleted: true})
	if got, err := s.GetJSON("z", nil); err != nil || !got.Deleted || got.Version != 3 || len(got.JSON) != 0 {
		t.Fatalf("after the delete: %s v%d deleted %v, %v", got.JSON, got.Version, got.Deleted, err)
	}
	if _, err := s.GetJSON("never", nil); !errors.Is(err, view.ErrNotFound) {
		t.Fatalf("unknown uid: %v", err)
	}
}

// SearchEmailJSON answers with exactly what encoding SearchEmail's result
// would give: the live profiles that hold the email, in uid order, and []
// for none.
func TestSearchEmailJSONIsTheProfilesJSON(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	a, b, c := profile("a", "Bob@Mail.com", 1), profile("b", "bob@mail.com", 1), profile("c", "bob@mail.com", 1)
	b.Username = `quo"te <&> \`
	put(t, s, a, b, c)
	c.Email, c.Version = "other@mail.com", 2
	if _, err := s.ApplyIndex(index, s.Partition("bob@mail.com"), []view.IndexEntry{{Email: "bob@mail.com", Profile: events.Profile{UID: "c", Version: 2, Deleted: true}}}, 2); err != nil {
		t.Fatal(err)
	}
	put(t, s, c)
	for _, email := range []string{" BOB@mail.com", "other@mail.com", "nobody@mail.com"} {
		found, err := s.SearchEmail(email)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(found)
		got, err := s.SearchEmailJSON(email, []byte("x"))
		if err != nil || string(got) != "x"+string(want) {
			t.Fatalf("%s: SearchEmailJSON = %s, %v; want x%s", email, got, err, want)
		}
	}
	if got, _ := s.SearchEmailJSON("bob@mail.com", nil); bytes.Contains(got, []byte(`"uid":"c"`)) {
		t.Fatalf("a profile that left the email is still found: %s", got)
	}
}
