package projection_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"profiles/events"
	"profiles/platform/topology"
	"profiles/projections/projection"
)

// fakeCodec encodes a snapshot as "uid@version" and an email key as the
// normalized email in brackets.
type fakeCodec struct{ fail error }

func (c fakeCodec) EncodeSnapshot(p events.Profile) ([]byte, error) {
	if c.fail != nil {
		return nil, c.fail
	}
	if p.Deleted {
		return nil, nil
	}
	return fmt.Appendf(nil, "%s@%d", p.UID, p.Version), nil
}

func (fakeCodec) EmailKey(email string) string { return "[" + events.NormalizeEmail(email) + "]" }

// rec is a Record without its headers; Value "-" is a tombstone.
type rec struct{ Topic, Key, Value, ID string }

func TestStep(t *testing.T) {
	at := time.Unix(0, 0)
	target := projection.Target{Snapshots: "snaps", EmailIndex: "index", Source: "/test"}
	live := events.Profile{UID: "u", Username: "bob", Email: "Bob1@Mail.com", Version: 1}
	erased := events.Profile{UID: "u", Version: 1, Erased: true, Sealed: true}
	ix := func(email string) string { return topology.IndexKey("["+email+"]", "u") }
	tests := []struct {
		name     string
		prev     events.Profile
		data     events.Payload // nil: write prev's successor folded from nothing, without an event
		folded   events.Profile
		want     []rec
		wantType string
	}{
		{
			name: "create indexes the new email", data: events.ProfileCreated{Username: "bob", Email: "Bob1@Mail.com"},
			want: []rec{{"index", ix("bob1@mail.com"), "u@1", "e-index"}, {"snaps", "u", "u@1", "e"}},
		},
		{
			name: "email change unindexes the old email", prev: live, data: events.EmailChanged{Email: "bob2@mail.com"},
			want: []rec{{"index", ix("bob1@mail.com"), "-", "e-unindex"}, {"index", ix("bob2@mail.com"), "u@2", "e-index"}, {"snaps", "u", "u@2", "e"}},
		},
		{
			name: "username change re-indexes the same email", prev: live, data: events.UsernameChanged{Username: "rob"},
			want: []rec{{"index", ix("bob1@mail.com"), "u@2", "e-index"}, {"snaps", "u", "u@2", "e"}},
		},
		{
			name: "case-only email change keeps one entry", prev: live, data: events.EmailChanged{Email: " BOB1@mail.com"},
			want: []rec{{"index", ix("bob1@mail.com"), "u@2", "e-index"}, {"snaps", "u", "u@2", "e"}},
		},
		{
			name: "delete unindexes and tombstones the snapshot", prev: live, data: events.ProfileDeleted{},
			want: []rec{{"index", ix("bob1@mail.com"), "-", "e-unindex"}, {"snaps", "u", "-", "e"}},
		},
		{
			name: "an erased profile is indexed under the empty email", prev: erased, data: events.UsernameChanged{},
			want: []rec{{"index", ix(""), "u@2", "e-index"}, {"snaps", "u", "u@2", "e"}},
		},
		{
			name: "deleting an erased profile tombstones its entry", prev: erased, data: events.ProfileDeleted{},
			want: []rec{{"index", ix(""), "-", "e-unindex"}, {"snaps", "u", "-", "e"}},
		},
		{
			name: "a folded live state without its event", folded: events.Profile{UID: "u", Email: "Bob2@mail.com", Version: 7},
			want: []rec{{"index", ix("bob2@mail.com"), "u@7", ""}, {"snaps", "u", "u@7", ""}},
		},
		{
			name: "a folded deleted state without its event is a tombstone", folded: events.Profile{UID: "u", Version: 8, Deleted: true},
			want: []rec{{"snaps", "u", "-", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, e := tt.folded, (*events.Event)(nil)
			if tt.data != nil {
				ev := events.New("e", tt.prev, "u", tt.data, at)
				var err error
				if next, err = events.Apply(tt.prev, ev); err != nil {
					t.Fatal(err)
				}
				e = &ev
			}
			recs, err := projection.Step(fakeCodec{}, target, tt.prev, next, e)
			if err != nil {
				t.Fatal(err)
			}
			var got []rec
			for _, r := range recs {
				v := string(r.Value)
				if r.Value == nil {
					v = "-"
				}
				got = append(got, rec{r.Topic, r.Key, v, r.ID})
				want := map[string]string{events.HeaderVersion: fmt.Sprint(next.Version)}
				if e != nil {
					want = events.Headers(*e, "/test")
					want[events.HeaderVersion] = fmt.Sprint(next.Version)
				}
				if !maps.Equal(r.Headers, want) {
					t.Errorf("headers of %q: %v, want %v", r.Key, r.Headers, want)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("records\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
}

func TestStepFailsWhenTheSnapshotCannotBeEncoded(t *testing.T) {
	boom := fmt.Errorf("boom")
	recs, err := projection.Step(fakeCodec{fail: boom}, projection.Target{}, events.Profile{}, events.Profile{UID: "u", Version: 1}, nil)
	if err != boom || recs != nil {
		t.Fatalf("Step = %v, %v; want no records and the codec's error", recs, err)
	}
}
