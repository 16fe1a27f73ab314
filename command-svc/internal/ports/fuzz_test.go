package ports

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/routing"
	"profiles/platform/service"
	"profiles/platform/validate"
)

// The fuzz targets of this file send arbitrary bodies (and the headers that
// steer decoding) through the real handlers: the production router of
// service.NewRouter (with its middleware, which turns a panic into a 500),
// the real routing.Routing (every partition served here), Register's routes,
// httpx.DecodeJSON and validate. Only the use cases are fakes, which record
// the command they get. The contract they check:
//
//   - no input makes a handler panic or answer 5xx;
//   - every rejection is a 4xx application/problem+json body whose status
//     field matches the response status;
//   - every accepted body yields exactly one command, and that command is
//     valid by the documented rules (see platform/validate): a username of
//     1-64 printable characters, not blank; an email of at most 254
//     characters that is a valid address; the values as the body gave them;
//   - the body size limit holds: nothing larger than MaxBody is accepted,
//     and 413 is only for a body larger than MaxBody.
//
// Run one longer with, for example,
//
//	cd command-svc && go test -run '^$' -fuzz '^FuzzCreateProfile$' -fuzztime 5m ./internal/ports

// fuzzMaxBody is the body limit of the fuzzed handlers: small, so that the
// fuzzer reaches the 413 path too.
const fuzzMaxBody = 1 << 10

// fuzzUID is the profile a fuzzed PUT changes.
const fuzzUID = "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"

// recordingCommands fakes the use cases: it records every command and
// answers as if it had been applied and were visible.
type recordingCommands struct {
	creates []app.CreateProfile
	changes []app.ChangeProfile
}

func (c *recordingCommands) create() recordCreate { return recordCreate{c} }
func (c *recordingCommands) change() recordChange { return recordChange{c} }

type recordCreate struct{ c *recordingCommands }

func (f recordCreate) Handle(_ context.Context, cmd app.CreateProfile) (app.Result, error) {
	f.c.creates = append(f.c.creates, cmd)
	return app.Result{Visible: true, Profile: events.Profile{UID: cmd.UID, Username: cmd.Username, DisplayName: cmd.DisplayName, Email: cmd.Email, Version: 1}}, nil
}

type recordChange struct{ c *recordingCommands }

func (f recordChange) Handle(_ context.Context, cmd app.ChangeProfile) (app.Result, error) {
	f.c.changes = append(f.c.changes, cmd)
	return app.Result{Visible: true, Profile: events.Profile{UID: cmd.UID, Username: cmd.Username, Email: cmd.Email, Version: 2}}, nil
}

// selfRouter serves every partition on this instance.
type selfRouter struct{}

func (selfRouter) Route(context.Context, int32) (kafkax.Member, bool, error) {
	return kafkax.Member{ID: "fuzz"}, true, nil
}

// normalized keys an email by its normalized form.
type normalized struct{}

func (normalized) EmailKey(email string) string { return events.NormalizeEmail(email) }

// fuzzServer returns the command-svc router wired as in main, with fakes
// for the use cases.
func fuzzServer(c *recordingCommands) http.Handler {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := service.NewRouter(log, &httpx.Health{})
	HTTP{
		Log:         log,
		MaxBody:     fuzzMaxBody,
		Routing:     routing.Routing{Router: selfRouter{}, Self: kafkax.Member{ID: "fuzz"}, Wait: time.Second, Log: log},
		PartitionOf: func(string) int32 { return 0 },
		EmailKey:    normalized{},
		NewUID:      func(string) string { return uuid.NewString() },
		Commands:    Commands{CreateProfile: c.create(), ChangeProfile: c.change()},
	}.Register(r)
	return r
}

// seedBodies are valid and near-valid bodies of POST and PUT.
var seedBodies = []string{
	`{"username":"bob","email":"b@mail.com"}`,
	`{"username":"bob","displayName":"Bob Ø 🚀","email":"b@mail.com"}`,
	`{"username":"bob","displayName":null,"email":"b@mail.com"}`,
	` {"email":"b@mail.com","username":"bob"} ` + "\n",
	`{"USERNAME":"bob","Email":"b@mail.com"}`,
	`{"username":"bob","username":"alice","email":"b@mail.com"}`,
	`{"username":"` + strings.Repeat("é", 64) + `","email":"b@mail.com"}`,
	`{"username":"` + strings.Repeat("é", 65) + `","email":"b@mail.com"}`,
	`{"username":"bob","email":"` + strings.Repeat("a", 64) + "@" + strings.Repeat("b", 185) + `.com"}`,
	`{"username":"bob","email":"` + strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + `.com"}`,
	`{"username":"bob","email":"\"quoted local\"@mail.com"}`,
	`{"username":"bob","email":"b@mail.com "}`,
	`{"username":"bob","email":"B@Mail.Com."}`,
	`{"username":"bob","email":"bob"}`,
	`{"username":"bob","email":"b@mail.com","admin":true}`,
	`{"username":"Bo\u0007b","email":"b@mail.com"}`,
	`{"username":"   ","email":"b@mail.com"}`,
	`{"username":"\ud800","email":"b@mail.com"}`,
	"{\"username\":\"\xff\",\"email\":\"b@mail.com\"}",
	`{"username":7,"email":"b@mail.com"}`,
	`{"username":"bob","email":"b@mail.com"} {}`,
	`{"username":"bob","email":"b@mail.com"`,
	`[{"username":"bob","email":"b@mail.com"}]`,
	`null`, `{}`, `[]`, `""`, ``, `{{{`,
	`{"username":"bob","email":"b@mail.com","displayName":"` + strings.Repeat("x", fuzzMaxBody) + `"}`,
}

// FuzzCreateProfile fuzzes POST /api/profile: its body, Content-Type and
// Idempotency-Key.
func FuzzCreateProfile(f *testing.F) {
	for _, b := range seedBodies {
		f.Add([]byte(b), "application/json", "")
	}
	f.Add([]byte(seedBodies[0]), "application/json; charset=utf-8", "order-42")
	f.Add([]byte(seedBodies[0]), "Application/JSON", "order 42")
	f.Add([]byte(seedBodies[0]), "text/plain", "")
	f.Add([]byte(seedBodies[0]), "application/json; charset", "")
	f.Add([]byte(seedBodies[0]), "", strings.Repeat("k", 256))
	f.Fuzz(func(t *testing.T, body []byte, contentType, key string) {
		var c recordingCommands
		w := serveFuzz(&c, http.MethodPost, "/api/profile", body, contentType, HeaderIdempotencyKey, key)
		if !checkResponse(t, w, http.StatusCreated, len(body), len(c.creates)) {
			return
		}
		cmd := c.creates[0]
		var sent createBody
		checkAccepted(t, body, &sent)
		if cmd.Username != sent.Username || cmd.DisplayName != sent.DisplayName || cmd.Email != sent.Email {
			t.Fatalf("command %+v does not hold the body's values %+v", cmd, sent)
		}
		checkUsername(t, "username", cmd.Username)
		if cmd.DisplayName != "" {
			checkUsername(t, "displayName", cmd.DisplayName)
		}
		checkEmail(t, cmd.Email)
		if _, err := uuid.Parse(cmd.UID); err != nil || (key != "" && cmd.UID != app.UIDForKey(key)) || cmd.Idempotent != (key != "") {
			t.Fatalf("command uid %q (idempotent %v) for Idempotency-Key %q", cmd.UID, cmd.Idempotent, key)
		}
	})
}

// serveFuzz sends body with contentType to fuzzServer(c), and header set to
// value unless value is empty.
func serveFuzz(c *recordingCommands, method, target string, body []byte, contentType, header, value string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	if value != "" {
		r.Header.Set(header, value)
	}
	w := httptest.NewRecorder()
	fuzzServer(c).ServeHTTP(w, r)
	return w
}

// FuzzChangeProfile fuzzes PUT /api/profile/{uid}: its body, Content-Type
// and If-Match.
func FuzzChangeProfile(f *testing.F) {
	for _, b := range seedBodies {
		f.Add([]byte(b), "application/json", "")
	}
	f.Add([]byte(`{"username":"bob","email":"b@mail.com"}`), "application/json", `"1", W/"2", *`)
	f.Add([]byte(`{"username":"bob","email":"b@mail.com"}`), "application/json", `"99999999999999999999"`)
	f.Fuzz(func(t *testing.T, body []byte, contentType, ifMatchHeader string) {
		var c recordingCommands
		w := serveFuzz(&c, http.MethodPut, "/api/profile/"+fuzzUID, body, contentType, "If-Match", ifMatchHeader)
		if !checkResponse(t, w, http.StatusOK, len(body), len(c.changes)) {
			return
		}
		cmd := c.changes[0]
		var sent profileBody
		checkAccepted(t, body, &sent)
		if cmd.UID != fuzzUID || cmd.Username != sent.Username || cmd.Email != sent.Email {
			t.Fatalf("command %+v does not hold the body's values %+v", cmd, sent)
		}
		checkUsername(t, "username", cmd.Username)
		checkEmail(t, cmd.Email)
	})
}

// checkResponse checks the response to a fuzzed request and reports whether
// it accepted the body (answered okStatus after running one command).
func checkResponse(t *testing.T, w *httptest.ResponseRecorder, okStatus, bodyLen, commands int) bool {
	t.Helper()
	if w.Code == okStatus {
		if commands != 1 || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d after %d commands, Content-Type %q: %s", w.Code, commands, w.Header().Get("Content-Type"), w.Body)
		}
		if bodyLen > fuzzMaxBody {
			t.Fatalf("accepted a body of %d bytes, over the limit of %d", bodyLen, fuzzMaxBody)
		}
		return true
	}
	if w.Code < 400 || w.Code > 499 {
		t.Fatalf("status %d, want %d or 4xx: %s", w.Code, okStatus, w.Body)
	}
	if commands != 0 {
		t.Fatalf("status %d, but %d commands ran", w.Code, commands)
	}
	if ct := w.Header().Get("Content-Type"); ct != httpx.ProblemContentType {
		t.Fatalf("status %d with Content-Type %q, want %s: %s", w.Code, ct, httpx.ProblemContentType, w.Body)
	}
	var p httpx.Problem
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("status %d with a body that is no problem: %v", w.Code, err)
	}
	if p.Status != w.Code || p.Type == "" || p.Title == "" {
		t.Fatalf("status %d with problem %+v", w.Code, p)
	}
	if w.Code == http.StatusRequestEntityTooLarge && bodyLen <= fuzzMaxBody {
		t.Fatalf("413 for a body of %d bytes, within the limit of %d", bodyLen, fuzzMaxBody)
	}
	return false
}

// checkAccepted checks that an accepted body is one JSON object and decodes
// it, leniently, into dst.
func checkAccepted(t *testing.T, body []byte, dst any) {
	t.Helper()
	if trimmed := bytes.TrimSpace(body); !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
		t.Fatalf("accepted a body that is not one JSON object: %q", body)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		t.Fatalf("accepted a body that does not decode: %v: %q", err, body)
	}
}

// checkUsername checks the username rule of platform/validate, written out
// independently of it.
func checkUsername(t *testing.T, field, s string) {
	t.Helper()
	ok := utf8.ValidString(s) && strings.TrimSpace(s) != "" && utf8.RuneCountInString(s) <= validate.MaxUsername
	for _, r := range s {
		ok = ok && unicode.IsPrint(r)
	}
	if !ok {
		t.Fatalf("accepted %s %q", field, s)
	}
}

// checkEmail checks the email rule of platform/validate: at most 254
// characters and a valid address.
func checkEmail(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > validate.MaxEmail || !strings.Contains(s, "@") {
		t.Fatalf("accepted email %q", s)
	}
	if _, err := mail.ParseAddress(s); err != nil {
		t.Fatalf("accepted email %q, which is no address: %v", s, err)
	}
	if p := validate.Var("email", s, validate.EmailTag); p != nil {
		t.Fatalf("accepted email %q that fails validation: %+v", s, p)
	}
}
