package app_test

import (
	"errors"
	"testing"

	"profiles/command-svc/internal/app"
)

func TestUIDForKeyIsStableAndVersion5(t *testing.T) {
	a, b := app.UIDForKey("order-42"), app.UIDForKey("order-42")
	if a != b || a[14] != '5' || app.UIDForKey("order-43") == a {
		t.Fatalf("UIDForKey: %s %s", a, b)
	}
}

func TestNewProfileUID(t *testing.T) {
	const own = "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"
	newID := func() string { return "fresh" }
	tests := []struct {
		name       string
		caller     app.Caller
		key        string
		uid        string
		idempotent bool
		err        error
	}{
		{"a writer gets its sub", app.Caller{Subject: own}, "k", own, false, nil},
		{"a writer whose sub is no uid gets none", app.Caller{Subject: "alice@idp"}, "", "", false, app.ErrNotOwner},
		{"an admin with a key", app.Caller{Subject: "ops", Admin: true}, "k", app.UIDForKey("k"), true, nil},
		{"an admin without a key", app.Caller{Subject: "ops", Admin: true}, "", "fresh", false, nil},
		{"the zero caller", app.Caller{}, "", "fresh", false, nil},
		{"an invalid key", app.Caller{Admin: true}, "a b", "", false, app.ErrInvalidIdempotencyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, idem, err := app.NewProfileUID(tt.caller, tt.key, newID)
			if uid != tt.uid || idem != tt.idempotent || !errors.Is(err, tt.err) {
				t.Fatalf("NewProfileUID = %q, %v, %v; want %q, %v, %v", uid, idem, err, tt.uid, tt.idempotent, tt.err)
			}
			if err == nil && tt.caller.Idempotent(tt.key) != idem {
				t.Fatalf("Idempotent(%q) disagrees with NewProfileUID", tt.key)
			}
		})
	}
}
