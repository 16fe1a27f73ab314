package auth

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"

	"profiles/platform/config"
)

// Flags are the authentication settings of command-svc and query-svc. The
// shared secret of the instances is read from the environment only
// (INTERNAL_SECRET, INTERNAL_SECRET_PREVIOUS) or from a file
// (INTERNAL_SECRET_FILE), never from a flag, which anyone on the host can
// read in the process list.
type Flags struct {
	Mode        *string
	JWKSFile    *string
	JWKSURL     *string
	JWKSRefresh *time.Duration
	Audience    *string
	Issuer      *string
	Leeway      *time.Duration
	SecretFile  *string
}

// RegisterFlags registers the authentication settings on fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	return &Flags{
		Mode:        config.String(fs, "auth-mode", "AUTH_MODE", string(ModeJWT), "jwt (bearer JWTs required) or off (development: no authentication)"),
		JWKSFile:    config.String(fs, "auth-jwks-file", "AUTH_JWKS_FILE", "", "JWKS file with the public keys that sign tokens (AUTH_MODE=jwt; this or AUTH_JWKS_URL); reloaded every AUTH_JWKS_REFRESH while running"),
		JWKSURL:     config.String(fs, "auth-jwks-url", "AUTH_JWKS_URL", "", "URL of the JWKS with the public keys that sign tokens (AUTH_MODE=jwt; this or AUTH_JWKS_FILE)"),
		JWKSRefresh: config.Duration(fs, "auth-jwks-refresh", "AUTH_JWKS_REFRESH", DefaultJWKSRefresh, "how often the JWKS (AUTH_JWKS_FILE or AUTH_JWKS_URL) is loaded again; a bad one keeps the keys already loaded"),
		Audience:    config.String(fs, "auth-audience", "AUTH_AUDIENCE", "", "the audience (aud) a token must name (required with AUTH_MODE=jwt)"),
		Issuer:      config.String(fs, "auth-issuer", "AUTH_ISSUER", "", "the issuer (iss) a token must name; empty: any"),
		Leeway:      config.Duration(fs, "auth-leeway", "AUTH_LEEWAY", DefaultLeeway, "clock skew allowed on a token's exp and nbf"),
		SecretFile:  config.String(fs, "internal-secret-file", "INTERNAL_SECRET_FILE", "", "file holding INTERNAL_SECRET (instead of the variable)"),
	}
}

// Authenticator builds the Authenticator the settings describe, or says
// what is missing. With AUTH_MODE=jwt (the default) it needs a JWKS
// (AUTH_JWKS_FILE or AUTH_JWKS_URL), AUTH_AUDIENCE and INTERNAL_SECRET; the
// service refuses to start without them. ctx ends the JWKS reloads (of
// the file or the URL, every AUTH_JWKS_REFRESH).
func (f *Flags) Authenticator(ctx context.Context, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{Mode: Mode(*f.Mode), Log: log}
	secret, err := f.secret()
	if err != nil {
		return nil, err
	}
	if secret != "" {
		var previous []string
		if p := os.Getenv("INTERNAL_SECRET_PREVIOUS"); p != "" {
			previous = append(previous, p)
		}
		if a.Signer, err = NewSigner(secret, previous...); err != nil {
			return nil, err
		}
	}
	if a.Mode == ModeJWT {
		var keys keyfunc.Keyfunc
		switch {
		case *f.JWKSFile != "" && *f.JWKSURL != "":
			return nil, errors.New("set AUTH_JWKS_FILE or AUTH_JWKS_URL, not both")
		case *f.JWKSFile != "":
			keys, err = KeysFromFile(ctx, *f.JWKSFile, *f.JWKSRefresh, log)
		case *f.JWKSURL != "":
			keys, err = KeysFromURL(ctx, *f.JWKSURL, *f.JWKSRefresh, log)
		default:
			return nil, errors.New("AUTH_MODE=jwt (the default) needs AUTH_JWKS_FILE or AUTH_JWKS_URL: the public keys that sign the tokens " +
				"(or AUTH_MODE=off, for development only)")
		}
		if err != nil {
			return nil, err
		}
		if *f.Audience == "" {
			return nil, errors.New("AUTH_MODE=jwt needs AUTH_AUDIENCE: the audience (aud) tokens for this service name")
		}
		if a.Verifier, err = NewVerifier(VerifierConfig{Keys: keys, Audience: *f.Audience, Issuer: *f.Issuer, Leeway: *f.Leeway}); err != nil {
			return nil, err
		}
	}
	if err := a.Check(); err != nil {
		return nil, err
	}
	return a, nil
}

// secret returns INTERNAL_SECRET, from the variable or from
// INTERNAL_SECRET_FILE ("" when neither is set).
func (f *Flags) secret() (string, error) {
	env := os.Getenv("INTERNAL_SECRET")
	if *f.SecretFile == "" {
		return env, nil
	}
	if env != "" {
		return "", errors.New("set INTERNAL_SECRET or INTERNAL_SECRET_FILE, not both")
	}
	b, err := os.ReadFile(*f.SecretFile)
	if err != nil {
		return "", fmt.Errorf("INTERNAL_SECRET_FILE: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
