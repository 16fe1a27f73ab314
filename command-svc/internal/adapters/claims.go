package adapters

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/events"
)

// Peers reaches the owner of an email's or a profile's partition through
// this instance's own internal endpoints (see ports), which route the
// request to the owner in one hop. It implements app.EmailClaims and
// app.ProfileLookup.
type Peers struct {
	// SelfURL is this instance's base URL.
	SelfURL string
	Client  *http.Client
	// Sign, if set, signs each request (see auth.Signer): the internal
	// endpoints serve signed requests only, when INTERNAL_SECRET is set.
	Sign func(r *http.Request, body []byte)
}

func (c Peers) sign(r *http.Request, body []byte) {
	if c.Sign != nil {
		c.Sign(r, body)
	}
}

type claimBody struct {
	Email string `json:"email"`
	UID   string `json:"uid"`
}

// Claim asks the owner of email's partition to claim it for uid.
func (c Peers) Claim(ctx context.Context, email, uid string) error {
	return c.claim(ctx, http.MethodPost, email, uid)
}

// Release asks the owner of email's partition to drop uid's claim.
func (c Peers) Release(ctx context.Context, email, uid string) error {
	return c.claim(ctx, http.MethodDelete, email, uid)
}

func (c Peers) claim(ctx context.Context, method, email, uid string) error {
	b, _ := json.Marshal(claimBody{Email: email, UID: uid})
	req, err := http.NewRequestWithContext(ctx, method, c.SelfURL+"/internal/claims", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c.sign(req, b)
	resp, err := c.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: email claim for %s: %v", app.ErrAppend, uid, err) // never the email: errors are logged
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("%w: for %s", app.ErrEmailTaken, uid)
	default:
		return fmt.Errorf("%w: email claim for %s: %s %s", app.ErrAppend, uid, resp.Status, body)
	}
}

// Profile returns the current state of uid from the owner of its partition.
func (c Peers) Profile(ctx context.Context, uid string) (events.Profile, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.SelfURL+"/internal/profiles/"+url.PathEscape(uid), nil)
	if err != nil {
		return events.Profile{}, err
	}
	c.sign(req, nil)
	resp, err := c.Client.Do(req)
	if err != nil {
		return events.Profile{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return events.Profile{}, fmt.Errorf("state of %s: %s", uid, resp.Status)
	}
	var st ProfileState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return events.Profile{}, err
	}
	return events.Profile{UID: st.UID, Username: st.Username, Email: st.Email, Version: st.Version, Deleted: st.Deleted}, nil
}

// ProfileState is the body of GET /internal/profiles/{uid}: the owner's
// current state of a profile (version 0 for one that never existed).
type ProfileState struct {
	UID      string `json:"uid"`
	Username string `json:"username"`
	Email    string `json:"email"`
	Version  int64  `json:"version"`
	Deleted  bool   `json:"deleted"`
}
