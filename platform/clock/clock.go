// Package clock is the wall clock of the services: the time written into
// what other processes read (an event's occurred-at, an email claim's
// claimed-at, a signed request's timestamp) and compared with what they
// wrote (a token's exp and nbf). Such readings can jump when an operator
// or NTP steps the clock, and they differ between machines. Nothing whose
// safety depends on elapsed time may use them: the lease
// (kafkax/lease.go) measures with time.Now's monotonic reading, and the
// email claims' protection with ClaimAges in command-svc.
//
// The test-only hook PROFILES_CLOCK_SKEW_FILE names a file holding a Go
// duration ("5m", "-5m", empty for none), read every 50 ms, that Now adds
// to the real time: the fault suite steps an instance's wall clock with it
// while the instance runs. The skew moves both readings of the time.Time
// that Now returns, so an interval measured across a step with Now
// includes the step, which is harsher than a real step (that leaves Go's
// monotonic reading alone).
package clock

import (
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// SkewFileEnv names the test-only skew file (see the package comment).
const SkewFileEnv = "PROFILES_CLOCK_SKEW_FILE"

var skew atomic.Int64

func init() {
	if path := os.Getenv(SkewFileEnv); path != "" {
		go follow(path, 50*time.Millisecond)
	}
}

// Now returns the wall-clock time, with the test-only skew if one is set.
func Now() time.Time {
	if d := skew.Load(); d != 0 {
		return time.Now().Add(time.Duration(d))
	}
	return time.Now()
}

// Skew returns the skew that Now adds now.
func Skew() time.Duration { return time.Duration(skew.Load()) }

// follow keeps skew equal to the duration in path (0 when it is missing,
// empty or malformed), and logs every change.
func follow(path string, every time.Duration) {
	for {
		set(readSkew(path))
		time.Sleep(every)
	}
}

func readSkew(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		slog.Error("malformed clock skew (test hook); ignoring it", "file", path, "value", s, "err", err)
		return 0
	}
	return d
}

func set(d time.Duration) {
	if old := skew.Swap(int64(d)); old != int64(d) {
		slog.Warn("wall clock stepped (test hook "+SkewFileEnv+")", "skew", d, "was", time.Duration(old))
	}
}
