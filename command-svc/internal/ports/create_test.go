package ports

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"profiles/command-svc/internal/app"
	"profiles/events"
)

// fakeCreate records the command and answers with the profile it would
// create.
type fakeCreate struct{ got *app.CreateProfile }

func (f fakeCreate) Handle(_ context.Context, cmd app.CreateProfile) (app.Result, error) {
	*f.got = cmd
	return app.Result{Visible: true, Profile: events.Profile{UID: cmd.UID, Username: cmd.Username, DisplayName: cmd.DisplayName, Email: cmd.Email, Version: 1}}, nil
}

func TestCreateBodyDisplayName(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantStatus  int
		wantField   string // the failing field of a 422
		displayName string // passed to the command on success
	}{
		{"absent", `{"username":"bob","email":"b@mail.com"}`, http.StatusCreated, "", ""},
		{"empty means absent", `{"username":"bob","displayName":"","email":"b@mail.com"}`, http.StatusCreated, "", ""},
		{"null means absent", `{"username":"bob","displayName":null,"email":"b@mail.com"}`, http.StatusCreated, "", ""},
		{"given", `{"username":"bob","displayName":"Bob Ø 🚀","email":"b@mail.com"}`, http.StatusCreated, "", "Bob Ø 🚀"},
		{"64 characters is the limit", `{"username":"bob","displayName":"` + strings.Repeat("é", 64) + `","email":"b@mail.com"}`, http.StatusCreated, "", strings.Repeat("é", 64)},
		{"65 characters is too long", `{"username":"bob","displayName":"` + strings.Repeat("é", 65) + `","email":"b@mail.com"}`, http.StatusUnprocessableEntity, "displayName", ""},
		{"control character", `{"username":"bob","displayName":"Bo\u0007b","email":"b@mail.com"}`, http.StatusUnprocessableEntity, "displayName", ""},
		{"newline", `{"username":"bob","displayName":"Bo\nb","email":"b@mail.com"}`, http.StatusUnprocessableEntity, "displayName", ""},
		{"only spaces", `{"username":"bob","displayName":"   ","email":"b@mail.com"}`, http.StatusUnprocessableEntity, "displayName", ""},
		{"not a string", `{"username":"bob","displayName":7,"email":"b@mail.com"}`, http.StatusBadRequest, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got app.CreateProfile
			h := HTTP{Commands: Commands{CreateProfile: fakeCreate{&got}}, NewUID: func(string) string { return "u1" }, EmailKey: normalized{}, Log: slog.Default()}
			r := httptest.NewRequest(http.MethodPost, "/api/profile", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.create(w, r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", w.Code, tt.wantStatus, w.Body)
			}
			switch w.Code {
			case http.StatusCreated:
				if got.DisplayName != tt.displayName || got.Username != "bob" {
					t.Fatalf("command = %+v, want displayName %q", got, tt.displayName)
				}
				var p map[string]any
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
					t.Fatal(err)
				}
				if _, ok := p["displayName"]; !ok {
					t.Fatalf("response has no displayName: %s", w.Body)
				}
			case http.StatusUnprocessableEntity:
				var p struct {
					Errors []struct{ Field string } `json:"errors"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || len(p.Errors) != 1 || p.Errors[0].Field != tt.wantField {
					t.Fatalf("problem %s, want one error on %s", w.Body, tt.wantField)
				}
			}
		})
	}
}

// PUT does not take displayName: no event changes it.
func TestChangeBodyRejectsDisplayName(t *testing.T) {
	h := HTTP{EmailKey: normalized{}, Log: slog.Default()}
	r := httptest.NewRequest(http.MethodPut, "/api/profile/74292b21-0fbb-4f1d-a18f-fa80f947fa5d",
		strings.NewReader(`{"username":"bob","displayName":"Bob","email":"b@mail.com"}`))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	if _, ok := decodeBody[profileBody](h, w, r); ok || w.Code != http.StatusBadRequest {
		t.Fatalf("PUT body with displayName: ok=%v status %d", ok, w.Code)
	}
}

// chooseUID asks NewUID for a uid with the email of the POST's body, and
// leaves the body whole for the handler, also one above the size limit
// (which the handler refuses).
func TestChooseUIDPeeksTheEmailAndKeepsTheBody(t *testing.T) {
	big := `{"username":"bob","email":"b@mail.com","displayName":"` + strings.Repeat("x", 200) + `"}`
	tests := []struct {
		name, body string
		maxBody    int64
		wantEmail  string // what NewUID was given
	}{
		{"the body's email", `{"username":"bob","email":"Bob@Mail.com"}`, 0, "Bob@Mail.com"},
		{"no email", `{"username":"bob"}`, 0, ""},
		{"not json", `username=bob`, 0, ""},
		{"above the limit", big, 100, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			var seen string
			h := HTTP{MaxBody: tt.maxBody, NewUID: func(email string) string { asked = append(asked, email); return "u1" }}
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				seen = string(b)
			})
			r := httptest.NewRequest(http.MethodPost, "/api/profile", strings.NewReader(tt.body))
			h.chooseUID(next).ServeHTTP(httptest.NewRecorder(), r)
			if len(asked) != 1 || asked[0] != tt.wantEmail {
				t.Fatalf("NewUID asked with %q, want once with %q", asked, tt.wantEmail)
			}
			if seen != tt.body {
				t.Fatalf("the handler read %q, want the whole body", seen)
			}
			if got := r.Header.Get(HeaderUID); got != "u1" {
				t.Fatalf("%s = %q, want u1", HeaderUID, got)
			}
		})
	}
}
