// Package portalloc hands out loopback TCP ports for the processes that the
// end-to-end tests and the benchmark start (brokers, services, pprof).
//
// Asking the kernel for port 0 and closing the listener is not enough for
// that: the kernel may give the same port to the next caller before the
// first process has bound it, and a port from the ephemeral range can be
// taken by any outgoing connection while a stopped service waits to be
// restarted on it. Both happened in CI ("bind: address already in use").
// An Allocator therefore hands out ports from a block below the ephemeral
// range (Linux's default is 32768-60999), never the same port twice, and
// only ports that nothing listens on at that moment.
package portalloc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ErrExhausted is returned by Take when every port of the block has been
// handed out or is in use.
var ErrExhausted = errors.New("portalloc: no free port left in the block")

// Allocator hands out the ports of the block [lo, hi) given to New. It is
// safe for concurrent use. Processes that run at the same time must use disjoint
// blocks: an Allocator only knows about its own ports.
type Allocator struct {
	lo, hi int

	mu    sync.Mutex
	given map[int]bool
	rnd   *rand.Rand
}

// New returns an Allocator for the ports lo to hi-1. It panics unless
// 0 < lo < hi <= 65536.
func New(lo, hi int) *Allocator {
	if lo <= 0 || hi <= lo || hi > 65536 {
		panic(fmt.Sprintf("portalloc: bad block [%d, %d)", lo, hi))
	}
	return &Allocator{lo: lo, hi: hi, given: map[int]bool{}, rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// FromEnv returns an Allocator for the block named by the environment
// variable env ("lo-hi", hi exclusive), or for [lo, hi) when it is unset.
// Runs that share a machine give each other disjoint blocks that way. It
// panics on a malformed value: a test setup error.
func FromEnv(env string, lo, hi int) *Allocator {
	if v := os.Getenv(env); v != "" {
		a, b, ok := strings.Cut(v, "-")
		l, err1 := strconv.Atoi(a)
		h, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil {
			panic(fmt.Sprintf("portalloc: %s=%q is not lo-hi", env, v))
		}
		lo, hi = l, h
	}
	return New(lo, hi)
}

// Take returns a port of the block that this Allocator has not handed out
// before and that could be bound on 127.0.0.1 just now. The caller keeps it
// for the rest of the process, across restarts of whatever listens on it.
func (a *Allocator) Take() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.hi - a.lo
	start := a.rnd.IntN(n)
	for i := range n {
		p := a.lo + (start+i)%n
		if a.given[p] {
			continue
		}
		a.given[p] = true // in use by someone else now, or ours from now on
		if free(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w [%d, %d)", ErrExhausted, a.lo, a.hi)
}

// TakeBlock returns the first of n consecutive ports of the block, none
// handed out before and each free just now, for a program that derives
// its ports from a base (deploy/run.sh's PORT_BASE). They are all the
// caller's from then on.
func (a *Allocator) TakeBlock(n int) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	size := a.hi - a.lo
	if n < 1 || n > size {
		return 0, fmt.Errorf("portalloc: a block of %d ports in [%d, %d)", n, a.lo, a.hi)
	}
	starts := size - n + 1
	first := a.rnd.IntN(starts)
	for i := range starts {
		base := a.lo + (first+i)%starts
		ok := true
		for p := base; p < base+n && ok; p++ {
			ok = !a.given[p] && free(p)
		}
		if ok {
			for p := base; p < base+n; p++ {
				a.given[p] = true
			}
			return base, nil
		}
	}
	return 0, fmt.Errorf("%w: no %d consecutive ports in [%d, %d)", ErrExhausted, n, a.lo, a.hi)
}

// free reports whether port p can be bound on 127.0.0.1.
func free(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
