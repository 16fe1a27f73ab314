package service

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthcheckURL(t *testing.T) {
	for addr, want := range map[string]string{
		":8081":          "http://127.0.0.1:8081/readyz",
		"0.0.0.0:8082":   "http://127.0.0.1:8082/readyz",
		"[::]:8083":      "http://127.0.0.1:8083/readyz",
		"127.0.0.2:8084": "http://127.0.0.2:8084/readyz",
		"[::1]:8085":     "http://[::1]:8085/readyz",
	} {
		if got, err := HealthcheckURL(addr); err != nil || got != want {
			t.Errorf("HealthcheckURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := HealthcheckURL("8081"); err == nil || !strings.Contains(err.Error(), "HTTP_ADDR") {
		t.Errorf("a bad HTTP_ADDR: %v", err)
	}
}

// readyServer serves /readyz with the status in *status, on loopback.
func readyServer(t *testing.T, status *atomic.Int32) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	addr := readyServer(t, &status)
	_, port, _ := net.SplitHostPort(addr)
	// The wildcard address a service listens on is probed on loopback.
	if err := Healthcheck(context.Background(), ":"+port, time.Second); err != nil {
		t.Fatalf("ready instance: %v", err)
	}
	status.Store(http.StatusServiceUnavailable)
	if err := Healthcheck(context.Background(), addr, time.Second); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("instance answering 503: %v, want ErrNotReady", err)
	}

	// Nothing listens: an error, not ErrNotReady.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := Healthcheck(context.Background(), closed, time.Second); err == nil || errors.Is(err, ErrNotReady) {
		t.Fatalf("nothing listening: %v", err)
	}

	// An instance that does not answer fails within the timeout.
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	defer slow.Close()
	defer close(hang)
	start := time.Now()
	if err := Healthcheck(context.Background(), strings.TrimPrefix(slow.URL, "http://"), 200*time.Millisecond); err == nil {
		t.Fatal("a hanging instance passed the health check")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the probe took %s with a 200ms timeout", d)
	}
}

// Serve with -healthcheck only probes: it loads no key and dials no
// broker, so settings that would stop the service (here, Kafka settings
// that cannot load and no key-encryption key) do not matter to it.
func TestServeHealthcheck(t *testing.T) {
	t.Setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL") // no credentials: Config would fail
	t.Setenv("PII_KEK", "")
	t.Setenv("PII_KEK_FILE", "")
	t.Setenv("PII_KEK_DEV", "")
	var status atomic.Int32
	status.Store(http.StatusOK)
	addr := readyServer(t, &status)
	serve := func() error {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		common := RegisterFlags(fs, ":0")
		kafka := RegisterKafkaFlags(fs)
		if err := fs.Parse([]string{"-healthcheck", "-http-addr", addr}); err != nil {
			t.Fatal(err)
		}
		return Serve("t", common, kafka, func(context.Context, *Boot) (*Application, error) {
			t.Fatal("-healthcheck wired the service")
			return nil, nil
		})
	}
	if err := serve(); err != nil {
		t.Fatalf("-healthcheck of a ready instance: %v", err)
	}
	status.Store(http.StatusServiceUnavailable)
	if err := serve(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("-healthcheck of an instance that is not ready: %v", err)
	}
}
