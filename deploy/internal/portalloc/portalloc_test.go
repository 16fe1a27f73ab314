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

// TakeBlock hands out consecutive free ports, never one given before
// (by Take or TakeBlock), and skips a busy port.
func TestTakeBlockIsConsecutiveFreeAndNotReused(t *testing.T) {
	// Eight free neighbouring ports; the fourth is held busy, so a block
	// of three fits only in the first three or in the last four.
	var lo int
	var busy net.Listener
	for p := 30100; p < 31900 && busy == nil; p += 8 {
		ok := true
		for q := p; q < p+8 && ok; q++ {
			ok = bindable(q)
		}
		if !ok {
			continue
		}
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+3)); err == nil {
			lo, busy = p, l
		}
	}
	if busy == nil {
		t.Fatal("no eight free neighbouring ports in 30100-31900")
	}
	defer busy.Close()
	a := portalloc.New(lo, lo+8)
	given := map[int]bool{}
	for range 2 {
		base, err := a.TakeBlock(3)
		if err != nil {
			t.Fatalf("TakeBlock: %v (given %v)", err, given)
		}
		for p := base; p < base+3; p++ {
			if p == lo+3 || given[p] || p < lo || p >= lo+8 {
				t.Fatalf("TakeBlock = %d: port %d busy, given before or outside", base, p)
			}
			given[p] = true
		}
	}
	// Left: one port (the fourth of the last four, or a spare): no block of
	// three, but Take still finds it, never one of the blocks.
	if base, err := a.TakeBlock(3); !errors.Is(err, portalloc.ErrExhausted) {
		t.Fatalf("third TakeBlock = %d, %v; want ErrExhausted", base, err)
	}
	if p, err := a.Take(); err != nil || given[p] || p == lo+3 {
		t.Fatalf("Take after the blocks = %d, %v", p, err)
	}
	if _, err := a.TakeBlock(0); err == nil {
		t.Fatal("TakeBlock(0) succeeded")
	}
}
