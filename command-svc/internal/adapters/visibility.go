package adapters

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// QueryVisibility waits until query-svc serves a profile at a version, by
// asking it with GET /api/profile/{uid}?minVersion=N, which query-svc holds
// open until its view has that version.
type QueryVisibility struct {
	// BaseURL of query-svc, e.g. http://127.0.0.1:8082.
	BaseURL string
	Client  *http.Client
	// Timeout bounds one wait.
	Timeout time.Duration
}

// WaitVisible returns nil once readers see uid at version or later. A 404
// also counts: the profile was deleted at that version or after it, and
// nothing can follow a delete.
func (v QueryVisibility) WaitVisible(ctx context.Context, uid string, version int64) error {
	ctx, cancel := context.WithTimeout(ctx, v.Timeout)
	defer cancel()
	u := v.BaseURL + "/api/profile/" + url.PathEscape(uid) + "?minVersion=" + strconv.FormatInt(version, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := v.Client.Do(req)
	if err != nil {
		return fmt.Errorf("wait for %s v%d: %w", uid, version, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNotFound:
		return nil
	default:
		return fmt.Errorf("wait for %s v%d: query-svc answered %s", uid, version, resp.Status)
	}
}
