package kafkax

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// tokenEndpoint is a client-credentials token endpoint for one client.
type tokenEndpoint struct {
	*httptest.Server
	mu       sync.Mutex
	requests int
	status   int // answer this status instead of a token when not 0
	ttl      int // expires_in; 0 leaves it out
	scope    string
}

func newTokenEndpoint(t *testing.T, id, secret string) *tokenEndpoint {
	e := &tokenEndpoint{ttl: 100}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests++
		w.Header().Set("Content-Type", "application/json")
		user, pass, ok := r.BasicAuth()
		switch {
		case r.Method != http.MethodPost || r.PostFormValue("grant_type") != "client_credentials":
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
			return
		case !ok || user != id || pass != secret:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"client authentication failed"}`)
			return
		case e.status != 0:
			w.WriteHeader(e.status)
			fmt.Fprint(w, `{"error":"temporarily_unavailable"}`)
			return
		}
		e.scope = r.PostFormValue("scope")
		a := map[string]any{"access_token": fmt.Sprintf("token-%d", e.requests), "token_type": "Bearer"}
		if e.ttl > 0 {
			a["expires_in"] = e.ttl
		}
		_ = json.NewEncoder(w).Encode(a)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *tokenEndpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests
}

func (e *tokenEndpoint) setStatus(s int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status = s
}

// testProvider is a provider on e whose clock the test moves, and whose
// log the test reads.
func testProvider(e *tokenEndpoint, secret string, ext map[string]string) (*OAuthTokenProvider, *time.Time, *bytes.Buffer) {
	p := NewOAuthTokenProvider(e.URL+"/token", "svc", secret, []string{"kafka", "profiles"}, ext)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return now }
	var logs bytes.Buffer
	p.log = slog.New(slog.NewTextHandler(&logs, nil))
	return p, &now, &logs
}

// The provider fetches a token once, hands it out while it is fresh, and
// fetches a new one once 80% of its lifetime has passed, before it
// expires; the extensions go with every token.
func TestOAuthTokenProviderRefreshesBeforeExpiry(t *testing.T) {
	e := newTokenEndpoint(t, "svc", "s3cret")
	ext := map[string]string{"logicalCluster": "lkc-1"}
	p, now, logs := testProvider(e, "s3cret", ext)

	tok, err := p.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token != "token-1" || tok.Extensions["logicalCluster"] != "lkc-1" || e.scope != "kafka profiles" {
		t.Fatalf("token %+v, scope %q", tok, e.scope)
	}
	*now = now.Add(79 * time.Second)
	for range 5 {
		if tok, err = p.Token(); err != nil || tok.Token != "token-1" {
			t.Fatalf("a fresh token must come from the cache: %+v %v", tok, err)
		}
	}
	if n := e.count(); n != 1 {
		t.Fatalf("%d token requests for a fresh token, want 1", n)
	}
	*now = now.Add(2 * time.Second) // 81 s of 100: refresh, before the expiry
	if tok, err = p.Token(); err != nil || tok.Token != "token-2" {
		t.Fatalf("after 81%% of the lifetime: %+v %v, want token-2", tok, err)
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "token-2") {
		t.Fatalf("the log holds the secret or the token:\n%s", logs)
	}
}

// Concurrent callers (sarama connects to every broker at once) share one
// token request.
func TestOAuthTokenProviderConcurrent(t *testing.T) {
	e := newTokenEndpoint(t, "svc", "s3cret")
	p, _, _ := testProvider(e, "s3cret", nil)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := p.Token(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.count(); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
}

// A failed token request is surfaced: a refused client as ErrOAuthRejected
// with the endpoint's reason, an endpoint that fails as ErrOAuthToken
// only (retried); while a cached token is still valid it is used, and the
// failure is logged.
func TestOAuthTokenProviderErrors(t *testing.T) {
	e := newTokenEndpoint(t, "svc", "s3cret")

	t.Run("wrong secret", func(t *testing.T) {
		p, _, logs := testProvider(e, "wrong", nil)
		_, err := p.Token()
		if !errors.Is(err, ErrOAuthToken) || !errors.Is(err, ErrOAuthRejected) || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("err = %v, want ErrOAuthRejected with invalid_client", err)
		}
		if !permanentConnectError(sarama.Wrap(sarama.ErrOutOfBrokers, err)) {
			t.Fatal("a refused client must stop the connection attempts")
		}
		if !strings.Contains(logs.String(), "could not get an OAuth token") || strings.Contains(logs.String(), "wrong") {
			t.Fatalf("log:\n%s", logs)
		}
	})

	t.Run("endpoint fails, then recovers", func(t *testing.T) {
		p, now, logs := testProvider(e, "s3cret", nil)
		if _, err := p.Token(); err != nil {
			t.Fatal(err)
		}
		e.setStatus(http.StatusServiceUnavailable)
		defer e.setStatus(0)
		*now = now.Add(85 * time.Second) // due for a refresh, still valid
		tok, err := p.Token()
		if err != nil || tok.Token == "" {
			t.Fatalf("a valid cached token must be used while the endpoint fails: %v", err)
		}
		if !strings.Contains(logs.String(), "could not refresh the OAuth token") {
			t.Fatalf("the failed refresh is not logged:\n%s", logs)
		}
		*now = now.Add(10 * time.Second) // 95 s: within the skew of the expiry
		_, err = p.Token()
		if !errors.Is(err, ErrOAuthToken) || errors.Is(err, ErrOAuthRejected) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("err = %v, want a 503 ErrOAuthToken that is not a rejection", err)
		}
		if permanentConnectError(sarama.Wrap(sarama.ErrOutOfBrokers, err)) {
			t.Fatal("an endpoint that fails must be retried")
		}
		e.setStatus(0)
		if tok, err = p.Token(); err != nil || tok.Token == "" {
			t.Fatalf("after the endpoint recovered: %v", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		down := httptest.NewServer(http.NotFoundHandler())
		down.Close()
		p := NewOAuthTokenProvider(down.URL, "svc", "s3cret", nil, nil)
		p.log = slog.New(slog.DiscardHandler)
		if _, err := p.Token(); !errors.Is(err, ErrOAuthToken) || errors.Is(err, ErrOAuthRejected) {
			t.Fatalf("err = %v", err)
		}
	})
}

// Without expires_in, the lifetime is the JWT's exp; a token with neither
// is refused, as it could not be refreshed in time.
func TestOAuthTokenLifetime(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	jwt := func(claims string) string {
		b64 := base64.RawURLEncoding.EncodeToString
		return b64([]byte(`{"alg":"ES256"}`)) + "." + b64([]byte(claims)) + ".sig"
	}
	for _, tc := range []struct {
		a    tokenAnswer
		want time.Duration
		err  string
	}{
		{tokenAnswer{AccessToken: "x", ExpiresIn: json.RawMessage(`3600`)}, time.Hour, ""},
		{tokenAnswer{AccessToken: "x", ExpiresIn: json.RawMessage(`"60"`)}, time.Minute, ""},
		{tokenAnswer{AccessToken: "x", ExpiresIn: json.RawMessage(`0`)}, 0, "not a positive number"},
		{tokenAnswer{AccessToken: jwt(`{"exp":1000300}`)}, 300 * time.Second, ""},
		{tokenAnswer{AccessToken: jwt(`{"exp":999999}`)}, 0, "expired"},
		{tokenAnswer{AccessToken: "opaque"}, 0, "no expires_in"},
	} {
		got, err := tokenLifetime(tc.a, now)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: %s %v, want %s %q", tc.a, got, err, tc.want, tc.err)
		}
	}
}

// OAUTHBEARER's settings: what is valid, and a clear error for what is not.
func TestSecurityValidateOAuth(t *testing.T) {
	ok := Security{Protocol: "SASL_SSL", SASLMechanism: "oauthbearer", OAuthTokenURL: "https://idp.example/token", OAuthClientID: "c", OAuthClientSecret: "s"}
	with := func(f func(*Security)) Security { s := ok; f(&s); return s }
	for _, tc := range []struct {
		name string
		s    Security
		want string
	}{
		{"valid", ok, ""},
		{"secret file", with(func(s *Security) { s.OAuthClientSecret, s.OAuthClientSecretFile = "", "f" }), ""},
		{"loopback http", with(func(s *Security) { s.OAuthTokenURL = "http://127.0.0.1:8080/token" }), ""},
		{"extensions", with(func(s *Security) {
			s.SASLExtensions = map[string]string{"logicalCluster": "lkc-1", "identityPoolId": "pool-1"}
		}), ""},
		{"without TLS", with(func(s *Security) { s.Protocol = "SASL_PLAINTEXT" }), "OAUTHBEARER sends a bearer token in clear: it needs KAFKA_SECURITY_PROTOCOL=SASL_SSL"},
		{"no token URL", with(func(s *Security) { s.OAuthTokenURL = "" }), "needs KAFKA_OAUTH_TOKEN_URL"},
		{"no client id", with(func(s *Security) { s.OAuthClientID = "" }), "needs KAFKA_OAUTH_CLIENT_ID"},
		{"no secret", with(func(s *Security) { s.OAuthClientSecret = "" }), "needs KAFKA_OAUTH_CLIENT_SECRET or KAFKA_OAUTH_CLIENT_SECRET_FILE"},
		{"both secrets", with(func(s *Security) { s.OAuthClientSecretFile = "f" }), "not both"},
		{"remote http", with(func(s *Security) { s.OAuthTokenURL = "http://idp.example/token" }), "must be https"},
		{"relative URL", with(func(s *Security) { s.OAuthTokenURL = "/token" }), "not an absolute URL"},
		{"password in the URL", with(func(s *Security) { s.OAuthTokenURL = "ftp://u:hunter2@idp.example/token" }), "ftp://u:xxxxx@idp.example/token"},
		{"username", with(func(s *Security) { s.SASLUsername = "u" }), "KAFKA_SASL_USERNAME is set but KAFKA_SASL_MECHANISM=OAUTHBEARER does not use it"},
		{"auth extension", with(func(s *Security) { s.SASLExtensions = map[string]string{"auth": "x"} }), `may not set "auth"`},
		{"bad extension key", with(func(s *Security) { s.SASLExtensions = map[string]string{"logical_cluster": "x"} }), "letters only"},
		{"token URL with SCRAM", Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPassword: "p", OAuthTokenURL: "https://x/t"}, "KAFKA_OAUTH_TOKEN_URL is set but KAFKA_SASL_MECHANISM=SCRAM-SHA-512 does not use it"},
		{"client id without SASL", Security{Protocol: "SSL", OAuthClientID: "c"}, "KAFKA_OAUTH_CLIENT_ID is set but KAFKA_SECURITY_PROTOCOL=SSL does not use SASL"},
		{"extensions without SASL", Security{SASLExtensions: map[string]string{"a": "b"}}, "KAFKA_SASL_EXTENSIONS is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
}

// The settings come from the environment like the other SASL settings,
// the secret never shows in -h or in the log description, and every
// sarama configuration of one Config shares one token provider.
func TestSecurityFlagsOAuth(t *testing.T) {
	e := newTokenEndpoint(t, "command-svc", "from-file")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
	t.Setenv("KAFKA_SASL_MECHANISM", "OAUTHBEARER")
	t.Setenv("KAFKA_OAUTH_TOKEN_URL", e.URL+"/token")
	t.Setenv("KAFKA_OAUTH_CLIENT_ID", "command-svc")
	t.Setenv("KAFKA_OAUTH_CLIENT_SECRET_FILE", secretFile)
	t.Setenv("KAFKA_OAUTH_SCOPES", "kafka,profiles")
	t.Setenv("KAFKA_SASL_EXTENSIONS", "logicalCluster=lkc-1,identityPoolId=pool-1")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	c, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	s := c.Security
	if s.OAuthClientID != "command-svc" || strings.Join(s.OAuthScopes, " ") != "kafka profiles" || s.SASLExtensions["identityPoolId"] != "pool-1" {
		t.Fatalf("%+v", s)
	}
	a, b := c.Sarama("a"), c.ProducerSarama("b")
	for _, sc := range []*sarama.Config{a, b} {
		if err := sc.Validate(); err != nil {
			t.Fatalf("sarama rejects the configuration: %v", err)
		}
		if !sc.Net.TLS.Enable || sc.Net.SASL.Mechanism != sarama.SASLTypeOAuth || sc.Net.SASL.User != "" || sc.Net.SASL.SCRAMClientGeneratorFunc != nil {
			t.Fatalf("TLS %v, mechanism %q, user %q", sc.Net.TLS.Enable, sc.Net.SASL.Mechanism, sc.Net.SASL.User)
		}
	}
	if a.Net.SASL.TokenProvider != b.Net.SASL.TokenProvider {
		t.Fatal("the configurations of one Config must share one token provider (one token cache)")
	}
	tok, err := a.Net.SASL.TokenProvider.Token()
	if err != nil || tok.Token != "token-1" || e.scope != "kafka profiles" {
		t.Fatalf("token %+v %v (scope %q): the secret file's newline must be trimmed", tok, err, e.scope)
	}
	if _, err := b.Net.SASL.TokenProvider.Token(); err != nil || e.count() != 1 {
		t.Fatalf("the second configuration fetched its own token (%d requests, %v)", e.count(), err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "kafka", s)
	if out := logs.String() + s.String(); strings.Contains(out, "from-file") || !strings.Contains(out, "oauth_client_id=command-svc") {
		t.Fatalf("log output %q", out)
	}

	// The secret in the environment never shows in -h.
	t.Setenv("KAFKA_OAUTH_CLIENT_SECRET_FILE", "")
	t.Setenv("KAFKA_OAUTH_CLIENT_SECRET", "from-env")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	f = RegisterFlags(fs)
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.PrintDefaults()
	if strings.Contains(usage.String(), "from-env") || !strings.Contains(usage.String(), "KAFKA_OAUTH_TOKEN_URL") {
		t.Fatalf("-h:\n%s", usage.String())
	}
	_ = fs.Parse(nil)
	if c, err = f.Config(); err != nil || c.Security.OAuthClientSecret != "from-env" {
		t.Fatalf("%v %+v", err, c.Security)
	}

	t.Setenv("KAFKA_SASL_EXTENSIONS", "logicalCluster")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	f = RegisterFlags(fs)
	_ = fs.Parse(nil)
	if _, err := f.Config(); err == nil || !strings.Contains(err.Error(), "KAFKA_SASL_EXTENSIONS") {
		t.Fatalf("want a KAFKA_SASL_EXTENSIONS error, got %v", err)
	}
}
