// Package testenv gives tests the real services that `make test` starts
// for them (deploy/test.sh): a Kafka broker, PostgreSQL, and so on, named
// by environment variables.
//
// A test that needs one and finds its variable unset skips, loudly, so
// that `go test ./...` on a bare machine still runs the pure tests; under
// PROFILES_REQUIRE_KAFKA=1, which `make test` sets, it fails instead, so
// that CI can never pass because a service was missing.
package testenv

import (
	"os"
	"strings"
	"testing"
)

// Require returns the value of env, which names what (for the messages),
// or skips or fails t as the package doc says.
func Require(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		Missing(t, "%s is not set (%s); run `make test`", env, what)
	}
	return v
}

// Missing skips t, or fails it under PROFILES_REQUIRE_KAFKA=1, with a
// message saying what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("PROFILES_REQUIRE_KAFKA") == "1" {
		t.Fatalf("PROFILES_REQUIRE_KAFKA=1 but "+format, args...)
	}
	t.Skipf("SKIPPED: "+format, args...)
}

// KafkaBrokers returns the test broker's addresses (PROFILES_TEST_KAFKA).
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	return strings.Split(Require(t, "PROFILES_TEST_KAFKA", "the test Kafka broker"), ",")
}
