//go:build !linux

package bench

import "os/exec"

// dieWithParent does nothing where the kernel cannot tie a child to its
// parent; stop the bench with Ctrl-C so that it stops what it started.
func dieWithParent(*exec.Cmd) {}
