// Command devtoken is the development identity provider of `make run
// AUTH_MODE=jwt`: it keeps an ES256 key pair in a directory (.data/dev-auth
// under make run), writes its public half as the JWKS the services load
// (AUTH_JWKS_FILE), and signs bearer tokens with it (`make token`).
//
//	devtoken init  [-dir D] [-audience A] [-issuer I]
//	devtoken token [-dir D] [-sub UUID] [-scopes "profiles:read profiles:write"] [-ttl 1h]
//
// init makes the key pair once (and reuses it after that, so tokens stay
// valid across restarts), writes D/jwks.json and D/issuer.json, and prints
// the services' settings as NAME=value lines: AUTH_JWKS_FILE,
// AUTH_AUDIENCE and AUTH_ISSUER. token prints one signed token for the
// subject and scopes, with the audience and issuer of the last init.
//
// It is for development only: the private key sits unencrypted on disk
// (mode 600). A deployment takes its tokens from a real identity provider
// and gives the services that provider's JWKS (docs/security.md).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"profiles/deploy/internal/devkey"
	"profiles/platform/auth"
)

const (
	// DefaultDir is where make run keeps the key pair.
	DefaultDir = ".data/dev-auth"
	// DefaultAudience and DefaultIssuer are the aud and iss of the tokens,
	// unless AUTH_AUDIENCE or AUTH_ISSUER say otherwise.
	DefaultAudience = "profiles-dev"
	DefaultIssuer   = "profiles-devtoken"
	// DefaultScopes lets the token's subject create, read and change its
	// own profile.
	DefaultScopes = auth.ScopeRead + " " + auth.ScopeWrite

	jwksFile   = "jwks.json"
	issuerFile = "issuer.json"
)

const usage = `usage: devtoken COMMAND [flags]

The development identity provider of make run AUTH_MODE=jwt.

Commands:
  init   make the signing key pair in -dir once (reused afterwards), write
         its public JWKS there, and print the services' settings
         (AUTH_JWKS_FILE, AUTH_AUDIENCE, AUTH_ISSUER) as NAME=value lines
  token  print a bearer token for -sub with -scopes, signed with that key

Run "devtoken COMMAND -h" for the flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "init", "token":
	default:
		fmt.Fprintf(stderr, "devtoken: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	fset := flag.NewFlagSet("devtoken "+cmd, flag.ContinueOnError)
	fset.SetOutput(stderr)
	dir := fset.String("dir", DefaultDir, "directory of the key pair, the JWKS and the issuer settings")
	audience := fset.String("audience", envOr("AUTH_AUDIENCE", DefaultAudience), "init: the audience (aud) of the tokens (env AUTH_AUDIENCE)")
	issuer := fset.String("issuer", envOr("AUTH_ISSUER", DefaultIssuer), "init: the issuer (iss) of the tokens (env AUTH_ISSUER)")
	sub := fset.String("sub", "", "token: the subject (sub): the uid of the caller's own profile; empty: a new random one")
	scopes := fset.String("scopes", DefaultScopes, "token: space-separated scopes: "+strings.Join(knownScopes, ", "))
	ttl := fset.Duration("ttl", time.Hour, "token: how long the token is valid")
	if err := fset.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "devtoken %s: unexpected arguments %q\n", cmd, fset.Args())
		return 2
	}
	var err error
	switch cmd {
	case "init":
		var s Settings
		if s, err = Init(*dir, *audience, *issuer); err == nil {
			fmt.Fprintf(stdout, "AUTH_JWKS_FILE=%s\nAUTH_AUDIENCE=%s\nAUTH_ISSUER=%s\n", s.JWKSFile, s.Audience, s.Issuer)
		}
	case "token":
		newSub := *sub == ""
		if newSub {
			*sub = uuid.NewString()
		}
		var tok string
		if tok, err = Token(*dir, *sub, *scopes, *ttl, time.Now()); err == nil {
			if newSub {
				fmt.Fprintf(stderr, "devtoken: sub %s (a new uid; a POST with this token creates the profile with it)\n", *sub)
			}
			fmt.Fprintln(stdout, tok)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "devtoken %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var knownScopes = []string{auth.ScopeRead, auth.ScopeWrite, auth.ScopeAdmin}

// Settings are what the services need to accept devtoken's tokens.
type Settings struct {
	JWKSFile string `json:"-"`
	Audience string `json:"audience"`
	Issuer   string `json:"issuer"`
	KeyID    string `json:"kid"`
}

// Init makes the key pair in dir unless it is there already, and writes
// the public JWKS and the issuer settings (atomically, so a service
// reloading the JWKS never reads half a file).
func Init(dir, audience, issuer string) (Settings, error) {
	if audience == "" {
		return Settings{}, errors.New("the audience must not be empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Settings{}, err
	}
	key, err := devkey.Load(dir)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = devkey.Create(dir)
	}
	if err != nil {
		return Settings{}, err
	}
	s := Settings{JWKSFile: filepath.Join(dir, jwksFile), Audience: audience, Issuer: issuer, KeyID: devkey.KeyID(&key.PublicKey)}
	jwks, err := devkey.PublicJWKS(&key.PublicKey, s.KeyID)
	if err != nil {
		return Settings{}, err
	}
	if err := devkey.WriteAtomic(s.JWKSFile, jwks, 0o644); err != nil {
		return Settings{}, err
	}
	settings, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return Settings{}, err
	}
	if err := devkey.WriteAtomic(filepath.Join(dir, issuerFile), append(settings, '\n'), 0o644); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// Token returns a token for sub with the space-separated scopes, valid
// for ttl from now, signed with the key of dir (made by Init).
func Token(dir, sub, scopes string, ttl time.Duration, now time.Time) (string, error) {
	if strings.TrimSpace(sub) == "" {
		return "", errors.New("the subject must not be empty")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("-ttl %s: it must be positive", ttl)
	}
	list := strings.Fields(scopes)
	for _, s := range list {
		if !slices.Contains(knownScopes, s) {
			return "", fmt.Errorf("unknown scope %q (the services know %s)", s, strings.Join(knownScopes, ", "))
		}
	}
	key, err := devkey.Load(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no signing key in %s: start the system with make run AUTH_MODE=jwt first (or run devtoken init)", dir)
	}
	if err != nil {
		return "", err
	}
	raw, err := os.ReadFile(filepath.Join(dir, issuerFile))
	if err != nil {
		return "", fmt.Errorf("the issuer settings: %w (run devtoken init)", err)
	}
	var s Settings
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s: %w", issuerFile, err)
	}
	claims := jwt.MapClaims{
		"sub": sub, "aud": s.Audience, "scope": strings.Join(list, " "),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
	}
	if s.Issuer != "" {
		claims["iss"] = s.Issuer
	}
	return devkey.Sign(key, claims)
}
