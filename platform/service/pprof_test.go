package service

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// pprof is served on a listener of its own, and stops with stop.
func TestServePprof(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	stop, addr, err := servePprof(log, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/debug/pprof/": "goroutine", "/debug/pprof/heap?debug=1": "heap profile"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Fatalf("GET %s = %d, without %q", path, resp.StatusCode, want)
		}
	}
	if _, _, err := servePprof(log, addr); err == nil {
		t.Fatal("a second listener on the same address started")
	}
	stop()
	if resp, err := http.Get("http://" + addr + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		t.Fatal("pprof still served after stop")
	}
}
