package pebblex

import (
	"errors"
	"testing"
)

func TestReserve(t *testing.T) {
	dir := t.TempDir()
	free, err := FreeBytes(dir)
	if err != nil || free == 0 {
		t.Fatalf("FreeBytes(%s) = %d, %v", dir, free, err)
	}
	if err := (Reserve{Dir: dir}).Check(); err != nil {
		t.Errorf("a reserve of 0 failed: %v", err)
	}
	if err := (Reserve{Dir: dir, Min: 1}).Check(); err != nil {
		t.Errorf("a reserve of 1 byte failed with %d bytes free: %v", free, err)
	}
	if err := (Reserve{Dir: dir, Min: free + 1<<40}).Check(); !errors.Is(err, ErrDiskFull) {
		t.Errorf("a reserve above the free space: %v, want ErrDiskFull", err)
	}
	if err := (Reserve{Dir: dir + "/missing", Min: 1}).Check(); err == nil || errors.Is(err, ErrDiskFull) {
		t.Errorf("a missing directory: %v, want another error", err)
	}
}
