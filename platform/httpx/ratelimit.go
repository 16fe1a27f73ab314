package httpx

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter limits requests per client: a token bucket per key, of rate
// RPS and size Burst. It is safe for concurrent use. Buckets idle for
// longer than it takes them to refill are forgotten, and at most MaxKeys
// are kept: beyond that, new keys share one bucket until the idle ones are
// swept.
type RateLimiter struct {
	rps   rate.Limit
	burst int
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	overflow  *rate.Limiter
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// MaxKeys bounds the buckets a RateLimiter keeps.
const MaxKeys = 100_000

// NewRateLimiter returns a limiter of rps requests per second per key,
// with bursts of up to burst (at least 1). rps <= 0 returns nil: no limit
// (a nil *RateLimiter allows everything).
func NewRateLimiter(rps float64, burst int) *RateLimiter {
	if rps <= 0 {
		return nil
	}
	burst = max(burst, 1)
	return &RateLimiter{
		rps: rate.Limit(rps), burst: burst, now: time.Now,
		buckets:  map[string]*bucket{},
		overflow: rate.NewLimiter(rate.Limit(rps), burst),
	}
}

// Allow takes one token from key's bucket. When there is none it returns
// false and how long until there is.
func (l *RateLimiter) Allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	l.sweep(now)
	b, ok := l.buckets[key]
	var lim *rate.Limiter
	switch {
	case ok:
		b.seen = now
		lim = b.lim
	case len(l.buckets) >= MaxKeys:
		lim = l.overflow
	default:
		lim = rate.NewLimiter(l.rps, l.burst)
		l.buckets[key] = &bucket{lim: lim, seen: now}
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets the buckets that have refilled (idle for longer than a
// full refill), at most once a second. l.mu is held.
func (l *RateLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Second {
		return
	}
	l.lastSweep = now
	full := time.Duration(float64(l.burst)/float64(l.rps)*float64(time.Second)) + time.Second
	for k, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, k)
		}
	}
}

// Middleware returns middleware that answers 429 `rate-limited`, with
// Retry-After in whole seconds, to a request whose key (from key) has no
// token left. A request for which key returns false is not limited. A nil
// RateLimiter limits nothing.
func (l *RateLimiter) Middleware(key func(*http.Request) (string, bool)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if l == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if k, ok := key(r); ok {
				if allowed, wait := l.Allow(k); !allowed {
					w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
					WriteProblem(w, r, NewProblem(http.StatusTooManyRequests, "rate-limited", "Too many requests",
						"this client sends more requests than it may; try again after Retry-After seconds"))
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}
