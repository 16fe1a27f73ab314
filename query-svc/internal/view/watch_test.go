package view

import "testing"

// Every reader of a key shares one channel; a wake closes it and forgets
// the key, and a key whose readers all ended their watch is forgotten
// too, woken or not, so that watches of keys never written keep nothing.
func TestWatchersForgetAKeyOnceWokenOrUnwatched(t *testing.T) {
	var w watchers
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	a1, unwatchA1 := w.add([]byte("a"))
	a2, unwatchA2 := w.add([]byte("a"))
	b, unwatchB := w.add([]byte("b"))
	if a1 != a2 || w.len() != 2 {
		t.Fatalf("two readers of a: one channel each, %d keys watched", w.len())
	}
	w.wake([][]byte{[]byte("a"), []byte("c")})
	if !closed(a1) || closed(b) || w.len() != 1 {
		t.Fatalf("after a wake of a and c: a closed %v, b closed %v, %d keys watched", closed(a1), closed(b), w.len())
	}
	// A new reader of a, after the wake, gets a new channel, which the
	// ended watches of the old one do not forget.
	a3, unwatchA3 := w.add([]byte("a"))
	unwatchA1()
	unwatchA2()
	if closed(a3) || w.len() != 2 {
		t.Fatalf("the new watch of a: closed %v, %d keys watched", closed(a3), w.len())
	}
	unwatchA3()
	unwatchB()
	if w.len() != 0 {
		t.Fatalf("%d keys watched after every watch ended", w.len())
	}
	c, unwatchC := w.add([]byte("c"))
	defer unwatchC()
	w.wakeAll()
	if !closed(c) || w.len() != 0 {
		t.Fatalf("after wakeAll: c closed %v, %d keys watched", closed(c), w.len())
	}
}

// len returns how many keys are watched.
func (w *watchers) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}
