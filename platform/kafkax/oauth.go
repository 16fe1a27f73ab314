package kafkax

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// MechanismOAuthBearer is SASL/OAUTHBEARER (RFC 7628, KIP-255): the client
// sends an OAuth 2.0 access token, which it gets from a token endpoint with
// the client-credentials grant (RFC 6749 section 4.4). The token is a bearer
// credential like a PLAIN password, so it is accepted over TLS only.
const MechanismOAuthBearer = "OAUTHBEARER"

var (
	// ErrOAuthToken is the error of every failed token request: the
	// endpoint could not be reached, refused the client, or answered
	// something that is not a token.
	ErrOAuthToken = errors.New("kafka: no OAuth token")
	// ErrOAuthRejected is a token request the endpoint refused with a 4xx
	// answer (wrong client id or secret, unknown scope): asking again does
	// not help, so a service stops at start instead of retrying.
	ErrOAuthRejected = errors.New("the token endpoint refused the client")
)

// Token lifetimes. A token is used until tokenRefreshFactor of its lifetime
// has passed (Kafka's own clients default to the same 0.8, through
// sasl.login.refresh.window.factor), and then a new one is fetched. When
// that fetch fails, the old token is still handed out until
// tokenExpirySkew before it expires, so a token endpoint that is down for
// less than a fifth of a lifetime goes unnoticed by the brokers.
const (
	tokenRefreshFactor = 0.8
	tokenExpirySkew    = 10 * time.Second
	// tokenRequestTimeout bounds a token request: sarama asks for the
	// token while it connects, and must not hang on a dead endpoint.
	tokenRequestTimeout = 10 * time.Second
)

// OAuthTokenProvider is a sarama.AccessTokenProvider that gets its tokens
// from an OAuth 2.0 token endpoint with the client-credentials grant,
// caches the token, and fetches a new one before the cached one expires.
// It is safe for concurrent use: sarama asks for a token on every broker
// connection, and those that ask at once share one request.
type OAuthTokenProvider struct {
	tokenURL, clientID, clientSecret string
	shownURL                         string // tokenURL without a password, for logs and errors
	scopes                           []string
	extensions                       map[string]string
	client                           *http.Client
	now                              func() time.Time
	log                              *slog.Logger // nil: slog.Default() at the time of logging

	mu        sync.Mutex
	token     string
	refreshAt time.Time // fetch a new token from then on
	expiresAt time.Time // never hand this token out from then on
}

// NewOAuthTokenProvider returns a provider for the client's credentials.
// Scopes may be empty (the endpoint's default scope); extensions are sent
// with every token as SASL extensions (Confluent Cloud's logicalCluster and
// identityPoolId, for example).
func NewOAuthTokenProvider(tokenURL, clientID, clientSecret string, scopes []string, extensions map[string]string) *OAuthTokenProvider {
	return &OAuthTokenProvider{
		tokenURL: tokenURL, shownURL: redactURL(tokenURL), clientID: clientID, clientSecret: clientSecret,
		scopes: scopes, extensions: extensions,
		client: &http.Client{Timeout: tokenRequestTimeout},
		now:    time.Now,
	}
}

// Token returns the cached token while it is fresh, and otherwise fetches
// a new one. A failed fetch is logged and returned, unless the cached
// token is still valid, which is then returned.
func (p *OAuthTokenProvider) Token() (*sarama.AccessToken, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.token != "" && now.Before(p.refreshAt) {
		return p.accessToken(), nil
	}
	tok, lifetime, err := p.fetch(now)
	if err != nil {
		if p.token != "" && now.Before(p.expiresAt.Add(-tokenExpirySkew)) {
			p.logger().Warn("kafka: could not refresh the OAuth token; the current one is used until it expires",
				"token_url", p.shownURL, "client_id", p.clientID, "expires_at", p.expiresAt, "err", err)
			return p.accessToken(), nil
		}
		p.logger().Error("kafka: could not get an OAuth token", "token_url", p.shownURL, "client_id", p.clientID, "err", err)
		return nil, err
	}
	p.token = tok
	p.expiresAt = now.Add(lifetime)
	p.refreshAt = now.Add(time.Duration(float64(lifetime) * tokenRefreshFactor))
	p.logger().Info("kafka: got an OAuth token", "token_url", p.shownURL, "client_id", p.clientID, "expires_at", p.expiresAt)
	return p.accessToken(), nil
}

// logger is the provider's logger: the process's default one unless a
// test set its own. The provider is made when the settings load, which
// may be before the binary installs its logger.
func (p *OAuthTokenProvider) logger() *slog.Logger {
	if p.log != nil {
		return p.log
	}
	return slog.Default()
}

func (p *OAuthTokenProvider) accessToken() *sarama.AccessToken {
	return &sarama.AccessToken{Token: p.token, Extensions: p.extensions}
}

// tokenAnswer is the token endpoint's JSON answer (RFC 6749 sections 5.1
// and 5.2).
type tokenAnswer struct {
	AccessToken      string          `json:"access_token"`
	TokenType        string          `json:"token_type"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	Error            string          `json:"error"`
	ErrorDescription string          `json:"error_description"`
}

// fetch asks the token endpoint for a token and returns it with its
// lifetime.
func (p *OAuthTokenProvider) fetch(now time.Time) (string, time.Duration, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(p.scopes) > 0 {
		form.Set("scope", strings.Join(p.scopes, " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrOAuthToken, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 section 2.3.1: the client id and secret, form-encoded, as
	// HTTP Basic credentials.
	req.SetBasicAuth(url.QueryEscape(p.clientID), url.QueryEscape(p.clientSecret))
	resp, err := p.client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("%w: POST %s: %w", ErrOAuthToken, p.shownURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("%w: POST %s: reading the answer: %w", ErrOAuthToken, p.shownURL, err)
	}
	var a tokenAnswer
	jsonErr := json.Unmarshal(body, &a)
	if resp.StatusCode != http.StatusOK {
		reason := strings.TrimSpace(a.Error + " " + a.ErrorDescription)
		if jsonErr != nil || reason == "" {
			reason = "no OAuth error in the answer"
		}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout {
			return "", 0, fmt.Errorf("%w: %w: POST %s as client %q: %s: %s", ErrOAuthToken, ErrOAuthRejected, p.shownURL, p.clientID, resp.Status, reason)
		}
		return "", 0, fmt.Errorf("%w: POST %s: %s: %s", ErrOAuthToken, p.shownURL, resp.Status, reason)
	}
	if jsonErr != nil {
		return "", 0, fmt.Errorf("%w: POST %s: the answer is not a JSON token: %w", ErrOAuthToken, p.shownURL, jsonErr)
	}
	if a.AccessToken == "" {
		return "", 0, fmt.Errorf("%w: POST %s: the answer has no access_token", ErrOAuthToken, p.shownURL)
	}
	if a.TokenType != "" && !strings.EqualFold(a.TokenType, "bearer") {
		return "", 0, fmt.Errorf("%w: POST %s: token_type %q, want Bearer", ErrOAuthToken, p.shownURL, a.TokenType)
	}
	lifetime, err := tokenLifetime(a, now)
	if err != nil {
		return "", 0, fmt.Errorf("%w: POST %s: %w", ErrOAuthToken, p.shownURL, err)
	}
	return a.AccessToken, lifetime, nil
}

// tokenLifetime is the answer's expires_in, or else the exp of the token
// itself when it is a JWT (as the brokers' validators require). A token
// with neither cannot be refreshed in time, and is refused.
func tokenLifetime(a tokenAnswer, now time.Time) (time.Duration, error) {
	if len(a.ExpiresIn) > 0 && string(a.ExpiresIn) != "null" {
		var secs float64
		// Some endpoints send the number as a string.
		raw := strings.Trim(string(a.ExpiresIn), `"`)
		if err := json.Unmarshal([]byte(raw), &secs); err != nil || secs <= 0 {
			return 0, fmt.Errorf("expires_in %s is not a positive number of seconds", a.ExpiresIn)
		}
		return time.Duration(secs * float64(time.Second)), nil
	}
	parts := strings.Split(a.AccessToken, ".")
	if len(parts) == 3 {
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var claims struct {
				Exp float64 `json:"exp"`
			}
			if json.Unmarshal(payload, &claims) == nil && claims.Exp > 0 {
				d := time.Unix(int64(claims.Exp), 0).Sub(now)
				if d <= 0 {
					return 0, fmt.Errorf("the token expired at %s", time.Unix(int64(claims.Exp), 0).UTC())
				}
				return d, nil
			}
		}
	}
	return 0, errors.New("the answer has no expires_in and the token is not a JWT with an exp")
}

// extensionKey and extensionValue are RFC 7628's key and value (section
// 3.1), which Kafka checks the same way; "auth" is the token's own key.
var (
	extensionKey   = regexp.MustCompile(`^[A-Za-z]+$`)
	extensionValue = regexp.MustCompile(`^[\x21-\x7E \t\r\n]+$`)
)

// validateExtensions reports an extension the brokers would refuse.
func validateExtensions(ext map[string]string) error {
	for k, v := range ext {
		switch {
		case k == sarama.SASLExtKeyAuth:
			return fmt.Errorf("kafka: KAFKA_SASL_EXTENSIONS may not set %q: it is the token's own key", k)
		case !extensionKey.MatchString(k):
			return fmt.Errorf("kafka: KAFKA_SASL_EXTENSIONS key %q must be letters only", k)
		case !extensionValue.MatchString(v):
			return fmt.Errorf("kafka: KAFKA_SASL_EXTENSIONS value of %q must be printable ASCII and not empty", k)
		}
	}
	return nil
}

// validateTokenURL requires https, or http to a loopback address (a token
// proxy beside the service, or a test's endpoint): the client secret is
// sent with every request.
func validateTokenURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("kafka: KAFKA_OAUTH_TOKEN_URL is not a URL")
	}
	raw = u.Redacted()
	switch {
	case u.Host == "":
		return fmt.Errorf("kafka: KAFKA_OAUTH_TOKEN_URL %q is not an absolute URL", raw)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("kafka: KAFKA_OAUTH_TOKEN_URL %q must be https (http only to a loopback address): the client secret is sent to it", raw)
	default:
		return fmt.Errorf("kafka: KAFKA_OAUTH_TOKEN_URL %q must be an https URL", raw)
	}
}

// redactURL is raw with any password in it replaced, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

var _ sarama.AccessTokenProvider = (*OAuthTokenProvider)(nil)
