package app_test

import (
	"testing"

	"profiles/command-svc/internal/app"
)

func TestUIDForKeyIsStableAndVersion5(t *testing.T) {
	a, b := app.UIDForKey("order-42"), app.UIDForKey("order-42")
	if a != b || a[14] != '5' || app.UIDForKey("order-43") == a {
		t.Fatalf("UIDForKey: %s %s", a, b)
	}
}
