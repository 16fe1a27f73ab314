package lincheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Client calls the profiles API at Base (the front door, say) and records
// every call in History. Its methods are safe for concurrent use if HTTP
// is; ID names the client in reports, and one Client should stand for one
// sequential process, as in Jepsen.
type Client struct {
	ID      int
	Base    string
	HTTP    *http.Client
	History *History
	// Header is sent with every request (Authorization, say).
	Header http.Header
}

// Create POSTs a profile and returns its uid. It records the operation
// only when the answer is 201, since only then is the uid known; any other
// answer is returned as an error.
func (c *Client) Create(ctx context.Context, username, email string) (string, error) {
	call := c.History.Now()
	status, body, _, err := c.do(ctx, http.MethodPost, "/api/profile", map[string]string{"username": username, "email": email}, 0)
	if err != nil {
		return "", err
	}
	if status != http.StatusCreated {
		return "", fmt.Errorf("POST /api/profile: %d %s", status, body)
	}
	var p struct {
		UID      string `json:"uid"`
		Username string `json:"username"`
		Email    string `json:"email"`
		Version  int64  `json:"version"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return "", fmt.Errorf("POST /api/profile: %w", err)
	}
	c.History.Add(c.ID, Input{Kind: Create, UID: p.UID, Username: username, Email: email}, call,
		Output{Status: status, Version: p.Version, Username: p.Username, Email: p.Email}, c.History.Now())
	return p.UID, nil
}

// Put replaces the username and email of uid, with If-Match when ifMatch
// is above 0.
func (c *Client) Put(ctx context.Context, uid, username, email string, ifMatch int64) Output {
	return c.op(ctx, Input{Kind: Put, UID: uid, Username: username, Email: email, IfMatch: ifMatch}, http.MethodPut,
		map[string]string{"username": username, "email": email})
}

// Delete deletes uid, with If-Match when ifMatch is above 0.
func (c *Client) Delete(ctx context.Context, uid string, ifMatch int64) Output {
	return c.op(ctx, Input{Kind: Delete, UID: uid, IfMatch: ifMatch}, http.MethodDelete, nil)
}

// Get reads uid.
func (c *Client) Get(ctx context.Context, uid string) Output {
	return c.op(ctx, Input{Kind: Get, UID: uid}, http.MethodGet, nil)
}

func (c *Client) op(ctx context.Context, in Input, method string, body any) Output {
	call := c.History.Now()
	status, b, etag, err := c.do(ctx, method, "/api/profile/"+in.UID, body, in.IfMatch)
	out := Outcome(status, b, etag, err)
	c.History.Add(c.ID, in, call, out, c.History.Now())
	return out
}

// Outcome maps an answer (its status, body and ETag, or the error that
// left it without one) to an Output. No answer, a 5xx and a 202 leave the
// outcome of a write unknown, and make a read observe nothing.
func Outcome(status int, body []byte, etag string, err error) Output {
	if err != nil || status >= 500 || status == http.StatusAccepted {
		return Output{Status: Unknown}
	}
	out := Output{Status: status}
	switch status {
	case http.StatusOK, http.StatusCreated:
		var p struct {
			Username string `json:"username"`
			Email    string `json:"email"`
			Version  int64  `json:"version"`
		}
		if json.Unmarshal(body, &p) == nil {
			out.Version, out.Username, out.Email = p.Version, p.Username, p.Email
		}
	case http.StatusPreconditionFailed:
		out.Version, _ = strconv.ParseInt(strings.Trim(etag, `"`), 10, 64)
	}
	return out
}

func (c *Client) do(ctx context.Context, method, path string, body any, ifMatch int64) (int, []byte, string, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, "", err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return 0, nil, "", err
	}
	for k, vs := range c.Header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch > 0 {
		req.Header.Set("If-Match", fmt.Sprintf(`"%d"`, ifMatch))
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, "", err
	}
	return resp.StatusCode, b, resp.Header.Get("ETag"), nil
}
