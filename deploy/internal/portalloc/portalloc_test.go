package portalloc_test

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"profiles/deploy/internal/portalloc"
)

func TestTakeNeverRepeatsAPortAndSkipsBusyOnes(t *testing.T) {
	// Three neighbouring ports below the ephemeral range that no other
	// test uses; the middle one is held busy.
	var busy net.Listener
	var bp int
	for p := 30001; p < 32000 && busy == nil; p += 3 {
		if !bindable(p-1) || !bindable(p+1) {
			continue
		}
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			busy, bp = l, p
		}
	}
	if busy == nil {
		t.Fatal("no three free neighbouring ports in 30000-32000")
	}
	defer busy.Close()

	// A block of three ports around one that is busy: the other two come
	// out once each, then the block is exhausted.
	lo := bp - 1
	a := portalloc.New(lo, bp+2)
	got := map[int]bool{}
	for range 2 {
		p, err := a.Take()
		if err != nil {
			t.Fatalf("Take: %v", err)
		}
		if p == bp || got[p] || p < lo || p >= bp+2 {
			t.Fatalf("Take = %d; busy %d, given %v", p, bp, got)
		}
		got[p] = true
	}
	if p, err := a.Take(); !errors.Is(err, portalloc.ErrExhausted) {
		t.Fatalf("third Take = %d, %v; want ErrExhausted", p, err)
	}
}

func TestTakenPortCanBeBound(t *testing.T) {
	p, err := portalloc.New(30000, 32000).Take()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("bind %d: %v", p, err)
	}
	l.Close()
}

func bindable(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
