package pebblex

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrDiskFull is what Reserve.Check returns when a store's file system
// has less free space than the store keeps in reserve.
var ErrDiskFull = errors.New("the disk of the store is (nearly) full")

// Reserve is free space a store leaves on its file system. Pebble cannot
// survive a write that finds the disk full: a failed write to its
// write-ahead log or MANIFEST ends the process (Logger.Fatalf), and the
// store cannot be reopened on a full disk either. So a store checks
// before every batch it commits that at least Min bytes are free, and
// refuses the batch with ErrDiskFull otherwise: nothing is written, the
// offsets do not move, and the caller retries once space returns. Min
// must exceed what Pebble may write between two checks on its own (a
// memtable flush, a compaction's output, the MANIFEST).
type Reserve struct {
	Dir string // a directory on the store's file system
	Min uint64 // bytes; 0 checks nothing
}

// Check returns nil when at least Min bytes are free on Dir's file
// system, and an error wrapping ErrDiskFull otherwise.
func (r Reserve) Check() error {
	if r.Min == 0 {
		return nil
	}
	free, err := FreeBytes(r.Dir)
	if err != nil {
		return fmt.Errorf("free space of %s: %w", r.Dir, err)
	}
	if free < r.Min {
		return fmt.Errorf("%w: %d MiB free in %s, below the reserve of %d MiB", ErrDiskFull, free>>20, r.Dir, r.Min>>20)
	}
	return nil
}

// FreeBytes returns the bytes an unprivileged process may still write on
// dir's file system.
func FreeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
