package service

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// At the end of ctx, /readyz fails at once while every other route is
// still served for DrainGrace (and DrainHandover); then Run returns.
func TestRunStopDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := http.NewServeMux()
	h.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {})
	h.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunStop(ctx, slog.New(slog.DiscardHandler), addr, h, Stop{Grace: time.Second, DrainGrace: 600 * time.Millisecond, DrainHandover: 300 * time.Millisecond})
	}()
	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for deadline := time.Now().Add(5 * time.Second); get("/readyz") != http.StatusOK; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not serving")
		}
	}
	stopped := time.Now()
	cancel()
	time.Sleep(100 * time.Millisecond)
	if got := get("/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining = %d, want 503", got)
	}
	if got := get("/api"); got != http.StatusOK {
		t.Fatalf("/api while draining = %d, want 200", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunStop did not return")
	}
	if took := time.Since(stopped); took < 850*time.Millisecond {
		t.Fatalf("stopped after %s, before DrainGrace + DrainHandover", took)
	}
	if got := get("/api"); got != 0 {
		t.Fatalf("still serving after RunStop returned: %d", got)
	}
}
