package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// HealthcheckTimeout bounds one -healthcheck probe: a container health
// check runs it every few seconds, and a probe that hangs counts as a
// failure anyway.
const HealthcheckTimeout = 3 * time.Second

// ErrNotReady is a -healthcheck probe whose instance answered, but not
// 200 (starting, catching up, or draining).
var ErrNotReady = errors.New("not ready")

// HealthcheckURL is the /readyz URL of the instance listening on addr
// (HTTP_ADDR) on this machine: a wildcard or empty host is the loopback
// address, since the probe runs beside the instance (in its container).
func HealthcheckURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("HTTP_ADDR %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}

// Healthcheck is the -healthcheck mode of every binary (the images have no
// curl): it asks the instance on addr for /readyz once, within timeout,
// and returns nil on 200. It needs none of the service's settings beyond
// HTTP_ADDR, so it runs before any key is loaded or broker dialled.
func Healthcheck(ctx context.Context, addr string, timeout time.Duration) error {
	u, err := HealthcheckURL(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s: %w", u, resp.Status, ErrNotReady)
	}
	return nil
}
