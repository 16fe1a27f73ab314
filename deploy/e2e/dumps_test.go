package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Goroutine dumps of a fault, second by second: with
// PROFILES_E2E_DUMPS=dir, every service of a fault scenario runs with
// PPROF_ADDR, and underLoad saves each service process's goroutine dump
// (debug=2) once a second from the fault until writes are acknowledged
// again, as dir/<test>-<hhmmss>/<second>-<process>.txt. Where each
// goroutine waited, second after second, is what the logs cannot say: it
// found the dials and the duplicate producer start of docs/faults.md's
// scenario 6. Off by default; the dumps cost the scenario a little time.

func dumpsDir() string { return os.Getenv("PROFILES_E2E_DUMPS") }

// saveGoroutineDumps starts saving s's dumps if PROFILES_E2E_DUMPS is set,
// and returns the func that stops it (and waits for the dump in flight).
func saveGoroutineDumps(t *testing.T, s *System) (stop func()) {
	root := dumpsDir()
	if root == "" {
		return func() {}
	}
	dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_")+"-"+time.Now().Format("150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("goroutine dumps: %v", err)
		return func() {}
	}
	t.Logf("goroutine dumps of every second of the fault in %s", dir)
	names := slices.Clone(s.order) // s.procs changes as instances restart
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 2 * time.Second}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for second := 0; ; second++ {
			for _, name := range names {
				addr := pprofAddrOf(s.logOf(name))
				if addr == "" {
					continue
				}
				resp, err := client.Get("http://" + addr + "/debug/pprof/goroutine?debug=2")
				if err != nil {
					continue // a process that is down has nothing to say
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-%s.txt", second, name)), b, 0o644)
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
