package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Bad requests get a 4xx problem+json, and not one record reaches Kafka.
func TestBadInputIsRejectedAndNothingReachesKafka(t *testing.T) {
	s := StartSystem(t, Options{})
	var live profile
	s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "dee", "email": "dee@mail.com"}, nil).JSON(t, &live)

	kc := Kafka(t)
	before := EndOffsets(t, kc, s.env["EVENTS_TOPIC"])
	const unknownUID = "00000000-0000-4000-8000-000000000000"
	tests := []struct {
		name    string
		method  string
		path    string
		body    any
		header  map[string]string
		want    int
		wantRef string // a field named in the problem's errors
	}{
		{"invalid JSON", "POST", "/api/profile", `{"username": "bob", `, nil, 400, ""},
		{"not an object", "POST", "/api/profile", `["bob"]`, nil, 400, ""},
		{"unknown field", "POST", "/api/profile", `{"username":"bob","email":"b@mail.com","admin":true}`, nil, 400, ""},
		{"missing email", "POST", "/api/profile", `{"username":"bob"}`, nil, 422, "email"},
		{"invalid email", "POST", "/api/profile", `{"username":"bob","email":"bob-at-mail"}`, nil, 422, "email"},
		{"email too long", "POST", "/api/profile", `{"username":"bob","email":"` + strings.Repeat("a", 250) + `@b.cd"}`, nil, 422, "email"},
		{"missing username", "POST", "/api/profile", `{"email":"b@mail.com"}`, nil, 422, "username"},
		{"username too long", "POST", "/api/profile", `{"username":"` + strings.Repeat("x", 65) + `","email":"b@mail.com"}`, nil, 422, "username"},
		{"oversized body", "POST", "/api/profile", `{"username":"` + strings.Repeat("x", 70_000) + `","email":"b@mail.com"}`, nil, 413, ""},
		{"wrong content type", "POST", "/api/profile", `{"username":"bob","email":"b@mail.com"}`, map[string]string{"Content-Type": "text/plain"}, 415, ""},
		{"no content type", "POST", "/api/profile", `{"username":"bob","email":"b@mail.com"}`, map[string]string{"Content-Type": ""}, 415, ""},
		{"PUT with invalid body", "PUT", "/api/profile/" + live.UID, `{"username":"","email":"b@mail.com"}`, nil, 422, "username"},
		{"PUT with malformed uid", "PUT", "/api/profile/not-a-uid", `{"username":"bob","email":"b@mail.com"}`, nil, 400, "uid"},
		{"PUT of unknown uid", "PUT", "/api/profile/" + unknownUID, `{"username":"bob","email":"b@mail.com"}`, nil, 404, ""},
		{"DELETE with malformed uid", "DELETE", "/api/profile/12345", nil, nil, 400, "uid"},
		{"DELETE of unknown uid", "DELETE", "/api/profile/" + unknownUID, nil, nil, 404, ""},
		{"GET with malformed uid", "GET", "/api/profile/abc", nil, nil, 400, "uid"},
		{"GET of unknown uid", "GET", "/api/profile/" + unknownUID, nil, nil, 404, ""},
		{"GET with bad minVersion", "GET", "/api/profile/" + live.UID + "?minVersion=-1", nil, nil, 400, ""},
		{"search without email", "GET", "/api/search", nil, nil, 400, "email"},
		{"search with invalid email", "GET", "/api/search?email=nope", nil, nil, 400, "email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Do(tt.method, tt.path, tt.body, tt.header)
			if r.Status != tt.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tt.want, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q, want application/problem+json", ct)
			}
			var p struct {
				Type   string `json:"type"`
				Title  string `json:"title"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
				Errors []struct {
					Field string `json:"field"`
				} `json:"errors"`
			}
			if err := json.Unmarshal(r.Body, &p); err != nil || p.Status != tt.want || p.Title == "" || p.Type == "" {
				t.Fatalf("not a problem document: %s (%v)", r.Body, err)
			}
			if tt.wantRef != "" {
				named := false
				for _, e := range p.Errors {
					named = named || e.Field == tt.wantRef
				}
				if !named {
					t.Fatalf("problem does not name field %q: %s", tt.wantRef, r.Body)
				}
			}
		})
	}
	if after := EndOffsets(t, kc, s.env["EVENTS_TOPIC"]); after != before {
		t.Fatalf("bad requests appended %d events", after-before)
	}
}
