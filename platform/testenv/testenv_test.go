package testenv_test

import (
	"testing"

	"profiles/platform/testenv"
)

func TestRequireReturnsTheValue(t *testing.T) {
	t.Setenv("PROFILES_TESTENV_EXAMPLE", "a,b")
	if got := testenv.Require(t, "PROFILES_TESTENV_EXAMPLE", "an example"); got != "a,b" {
		t.Fatalf("Require = %q", got)
	}
	t.Setenv("PROFILES_TEST_KAFKA", "127.0.0.1:1,127.0.0.1:2")
	if got := testenv.KafkaBrokers(t); len(got) != 2 || got[1] != "127.0.0.1:2" {
		t.Fatalf("KafkaBrokers = %q", got)
	}
}
