package service

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
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

// A task that does not return once its context ended (a consumer whose
// close waits for unreachable brokers) is given up after TaskStop:
// RunStop returns ErrStopTimeout, naming how many tasks still run, and a
// task that stops in time is waited for.
func TestRunStopGivesUpOnTasksThatDoNotStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		linger  time.Duration // how long the task runs on after its context ended
		wantErr bool
	}{
		{"a task that stops in time", 100 * time.Millisecond, false},
		{"a task that does not stop", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			release := make(chan struct{})
			defer close(release)
			stopped := make(chan struct{})
			lingering := func(ctx context.Context) error {
				<-ctx.Done()
				select {
				case <-time.After(tc.linger):
				case <-release:
				}
				close(stopped)
				return nil
			}
			prompt := func(ctx context.Context) error { <-ctx.Done(); return nil }
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = RunStop(ctx, slog.New(slog.DiscardHandler), addr, http.NewServeMux(), Stop{NoLeave: true, Grace: time.Second, TaskStop: 500 * time.Millisecond}, prompt, lingering)
			took := time.Since(start)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("RunStop = %v", err)
				}
				select {
				case <-stopped:
				default:
					t.Fatal("RunStop returned before the task stopped")
				}
				return
			}
			if !errors.Is(err, ErrStopTimeout) || !strings.Contains(err.Error(), "1 of 2 still running") {
				t.Fatalf("RunStop = %v, want ErrStopTimeout with 1 of 2 tasks running", err)
			}
			if took < 700*time.Millisecond || took > 5*time.Second {
				t.Fatalf("RunStop returned after %s, want the context's 200ms + TaskStop's 500ms", took)
			}
		})
	}
}
