package view

import "sync"

// watchers wakes the readers that wait for a key of the view to change.
//
// A reader takes a watch of the key it reads before it reads it, and waits
// on its channel if the value is not yet what it needs: a batch that
// writes the key and commits after the watch was taken closes the channel,
// so no change after the read is missed. Only the readers of the keys a
// batch wrote wake, so that a wait costs one read per change of its own
// key, not one per batch the view applies.
//
// Every method is safe for concurrent use. The zero value is ready.
type watchers struct {
	mu sync.Mutex
	m  map[string]*watch
}

// watch is the channel of one key's readers, and how many of them hold it.
type watch struct {
	ch chan struct{}
	n  int
}

// add returns the channel closed at the next wake of key (or wakeAll),
// and a func that ends this reader's watch: call it once the channel is no
// longer waited on, whether or not it was closed, so that a key that is
// never written keeps no entry.
func (w *watchers) add(key []byte) (<-chan struct{}, func()) {
	k := string(key)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*watch{}
	}
	wt := w.m[k]
	if wt == nil {
		wt = &watch{ch: make(chan struct{})}
		w.m[k] = wt
	}
	wt.n++
	return wt.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if wt.n--; wt.n == 0 && w.m[k] == wt {
			delete(w.m, k)
		}
	}
}

// wake closes the channels of keys, of a batch that has committed.
func (w *watchers) wake(keys [][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.m) == 0 {
		return
	}
	for _, k := range keys {
		if wt := w.m[string(k)]; wt != nil {
			close(wt.ch)
			delete(w.m, string(k))
		}
	}
}

// wakeAll closes every channel: a change that may touch any key, such as
// a partition dropped.
func (w *watchers) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, wt := range w.m {
		close(wt.ch)
		delete(w.m, k)
	}
}
