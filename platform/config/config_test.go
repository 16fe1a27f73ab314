package config

import (
	"flag"
	"reflect"
	"testing"
	"time"
)

func TestPrecedence(t *testing.T) {
	t.Setenv("X_ADDR", ":9000")
	t.Setenv("X_WAIT", "3s")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	addr := String(fs, "addr", "X_ADDR", ":8080", "")
	wait := Duration(fs, "wait", "X_WAIT", time.Second, "")
	n := Int(fs, "n", "X_UNSET_N", 7, "")
	if err := fs.Parse([]string{"-wait=5s"}); err != nil {
		t.Fatal(err)
	}
	if *addr != ":9000" || *wait != 5*time.Second || *n != 7 {
		t.Fatalf("addr=%q wait=%v n=%d", *addr, *wait, *n)
	}
}

func TestListAndMap(t *testing.T) {
	if got := List(" a, ,b "); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("List = %q", got)
	}
	m, err := Map("segment.ms=100, min.cleanable.dirty.ratio=0.01")
	if err != nil || m["segment.ms"] != "100" || m["min.cleanable.dirty.ratio"] != "0.01" {
		t.Fatalf("Map = %v, %v", m, err)
	}
	if _, err := Map("nokey"); err == nil {
		t.Fatal("Map accepted an item without '='")
	}
}
