package events_test

import (
	"testing"
	"time"

	"profiles/events"
)

func TestStoredKeepsTheFlags(t *testing.T) {
	for _, p := range []events.Profile{
		{},
		{UID: "u", Username: "a", Email: "a@b.c", Version: 3, CreatedAt: time.Unix(5, 0).UTC(), UpdatedAt: time.Unix(6, 0).UTC()},
		{UID: "u", Version: 4, Deleted: true, Sealed: true},
		{UID: "u", Version: 2, Erased: true, Sealed: true},
	} {
		b, err := events.MarshalStored(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := events.UnmarshalStored(b)
		if err != nil || got != p {
			t.Errorf("UnmarshalStored(MarshalStored(%+v)) = %+v, %v", p, got, err)
		}
	}
}
