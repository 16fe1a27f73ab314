package kafkax

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"

	"profiles/platform/config"
)

// Security protocols, named as Kafka names them (security.protocol).
const (
	ProtocolPlaintext     = "PLAINTEXT"
	ProtocolSSL           = "SSL"
	ProtocolSASLPlaintext = "SASL_PLAINTEXT"
	ProtocolSASLSSL       = "SASL_SSL"
)

// SASL mechanisms the clients speak. The SCRAM ones (RFC 5802, RFC 7677)
// never send the password; PLAIN (RFC 4616) sends it as is, so it is
// accepted over TLS only (SASL_SSL): Confluent Cloud's API keys use it.
// OAUTHBEARER (MechanismOAuthBearer, in oauth.go) sends a bearer token,
// and is accepted over TLS only for the same reason.
const (
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismPlain       = "PLAIN"
)

// Security is how a client reaches the brokers: in the clear (the
// default), over TLS, and with or without SASL authentication (SCRAM,
// PLAIN, or OAUTHBEARER with the client-credentials grant). Fill
// it with RegisterSecurityFlags or by hand, then call Load (Flags.Config
// does), which checks the combination and reads the files once.
type Security struct {
	// Protocol is PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; "" means PLAINTEXT.
	Protocol string
	// TLSCAFile is a PEM file of the certificates that sign the brokers'
	// certificates; "" means the system's roots.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a PEM client certificate and its key,
	// for brokers that require one (ssl.client.auth); both or neither.
	TLSCertFile, TLSKeyFile string
	// TLSServerName overrides the host name checked against the broker's
	// certificate ("" means the host of the address dialled).
	TLSServerName string
	// SASLMechanism is SCRAM-SHA-512 (the default), SCRAM-SHA-256, PLAIN
	// or OAUTHBEARER.
	SASLMechanism string
	// SASLUsername and SASLPassword are the SCRAM or PLAIN credentials.
	// Give the password or SASLPasswordFile (a file holding it), not both.
	SASLUsername, SASLPassword, SASLPasswordFile string
	// OAuthTokenURL, OAuthClientID and OAuthClientSecret are OAUTHBEARER's
	// client-credentials grant: the token endpoint, and the client's id and
	// secret. Give the secret or OAuthClientSecretFile, not both.
	OAuthTokenURL, OAuthClientID, OAuthClientSecret, OAuthClientSecretFile string
	// OAuthScopes are the scopes asked for (none: the endpoint's default).
	OAuthScopes []string
	// SASLExtensions are sent with each OAUTHBEARER token (RFC 7628
	// extensions, such as Confluent Cloud's logicalCluster and
	// identityPoolId).
	SASLExtensions map[string]string

	loaded *loadedSecurity
}

// loadedSecurity is what Load read from the files, and the OAUTHBEARER
// token provider, which every sarama configuration made from one loaded
// Security shares (one token cache per process, not one per client).
type loadedSecurity struct {
	tls      *tls.Config
	password string
	tokens   *OAuthTokenProvider
}

// TLS reports whether the protocol encrypts the connections.
func (s Security) TLS() bool {
	p := s.protocol()
	return p == ProtocolSSL || p == ProtocolSASLSSL
}

// SASL reports whether the protocol authenticates with SASL.
func (s Security) SASL() bool {
	p := s.protocol()
	return p == ProtocolSASLPlaintext || p == ProtocolSASLSSL
}

func (s Security) protocol() string {
	if s.Protocol == "" {
		return ProtocolPlaintext
	}
	return strings.ToUpper(s.Protocol)
}

func (s Security) mechanism() string {
	if s.SASLMechanism == "" {
		return MechanismSCRAMSHA512
	}
	return strings.ToUpper(s.SASLMechanism)
}

// Validate reports a combination of settings that cannot be meant: an
// unknown protocol or mechanism, TLS files for a protocol without TLS,
// SASL settings for a protocol without SASL, missing credentials.
func (s Security) Validate() error {
	switch s.protocol() {
	case ProtocolPlaintext, ProtocolSSL, ProtocolSASLPlaintext, ProtocolSASLSSL:
	default:
		return fmt.Errorf("kafka: KAFKA_SECURITY_PROTOCOL must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %q", s.Protocol)
	}
	if !s.TLS() {
		for _, f := range []struct{ name, value string }{
			{"KAFKA_TLS_CA_FILE", s.TLSCAFile}, {"KAFKA_TLS_CERT_FILE", s.TLSCertFile},
			{"KAFKA_TLS_KEY_FILE", s.TLSKeyFile}, {"KAFKA_TLS_SERVER_NAME", s.TLSServerName},
		} {
			if f.value != "" {
				return fmt.Errorf("kafka: %s is set but KAFKA_SECURITY_PROTOCOL=%s does not use TLS (use SSL or SASL_SSL)", f.name, s.protocol())
			}
		}
	}
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		return errors.New("kafka: give both KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE (a client certificate and its key), or neither")
	}
	passwordSettings := []struct{ name, value string }{
		{"KAFKA_SASL_USERNAME", s.SASLUsername}, {"KAFKA_SASL_PASSWORD", s.SASLPassword}, {"KAFKA_SASL_PASSWORD_FILE", s.SASLPasswordFile},
	}
	oauthSettings := []struct{ name, value string }{
		{"KAFKA_OAUTH_TOKEN_URL", s.OAuthTokenURL}, {"KAFKA_OAUTH_CLIENT_ID", s.OAuthClientID},
		{"KAFKA_OAUTH_CLIENT_SECRET", s.OAuthClientSecret}, {"KAFKA_OAUTH_CLIENT_SECRET_FILE", s.OAuthClientSecretFile},
		{"KAFKA_OAUTH_SCOPES", strings.Join(s.OAuthScopes, " ")}, {"KAFKA_SASL_EXTENSIONS", mapToString(s.SASLExtensions)},
	}
	if !s.SASL() {
		for _, f := range append(append([]struct{ name, value string }{{"KAFKA_SASL_MECHANISM", s.SASLMechanism}}, passwordSettings...), oauthSettings...) {
			if f.value != "" {
				return fmt.Errorf("kafka: %s is set but KAFKA_SECURITY_PROTOCOL=%s does not use SASL (use SASL_SSL or SASL_PLAINTEXT)", f.name, s.protocol())
			}
		}
		return nil
	}
	switch s.mechanism() {
	case MechanismSCRAMSHA512, MechanismSCRAMSHA256:
	case MechanismPlain, MechanismOAuthBearer:
		if !s.TLS() {
			what := "the password"
			if s.mechanism() == MechanismOAuthBearer {
				what = "a bearer token"
			}
			return fmt.Errorf("kafka: KAFKA_SASL_MECHANISM=%s sends %s in clear: it needs KAFKA_SECURITY_PROTOCOL=SASL_SSL, not %s", s.mechanism(), what, s.protocol())
		}
	default:
		return fmt.Errorf("kafka: KAFKA_SASL_MECHANISM must be SCRAM-SHA-512, SCRAM-SHA-256, or PLAIN or OAUTHBEARER (over SASL_SSL), not %q", s.SASLMechanism)
	}
	if s.mechanism() == MechanismOAuthBearer {
		return s.validateOAuth(passwordSettings)
	}
	for _, f := range oauthSettings {
		if f.value != "" {
			return fmt.Errorf("kafka: %s is set but KAFKA_SASL_MECHANISM=%s does not use it (it is for OAUTHBEARER)", f.name, s.mechanism())
		}
	}
	switch {
	case s.SASLUsername == "":
		return fmt.Errorf("kafka: KAFKA_SECURITY_PROTOCOL=%s needs KAFKA_SASL_USERNAME", s.protocol())
	case s.SASLPassword != "" && s.SASLPasswordFile != "":
		return errors.New("kafka: give KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both")
	case s.SASLPassword == "" && s.SASLPasswordFile == "":
		return fmt.Errorf("kafka: KAFKA_SECURITY_PROTOCOL=%s needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE", s.protocol())
	}
	return nil
}

// mapToString is m as k=v,... in key order ("" when empty).
func mapToString(m map[string]string) string {
	kv := make([]string, 0, len(m))
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return strings.Join(kv, ",")
}

// validateOAuth checks the OAUTHBEARER settings: a token endpoint, a
// client id and one secret, and no user name or password, which
// OAUTHBEARER does not use.
func (s Security) validateOAuth(passwordSettings []struct{ name, value string }) error {
	for _, f := range passwordSettings {
		if f.value != "" {
			return fmt.Errorf("kafka: %s is set but KAFKA_SASL_MECHANISM=OAUTHBEARER does not use it (it takes KAFKA_OAUTH_CLIENT_ID and KAFKA_OAUTH_CLIENT_SECRET)", f.name)
		}
	}
	switch {
	case s.OAuthTokenURL == "":
		return errors.New("kafka: KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_OAUTH_TOKEN_URL (the token endpoint of the client-credentials grant)")
	case s.OAuthClientID == "":
		return errors.New("kafka: KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_OAUTH_CLIENT_ID")
	case s.OAuthClientSecret != "" && s.OAuthClientSecretFile != "":
		return errors.New("kafka: give KAFKA_OAUTH_CLIENT_SECRET or KAFKA_OAUTH_CLIENT_SECRET_FILE, not both")
	case s.OAuthClientSecret == "" && s.OAuthClientSecretFile == "":
		return errors.New("kafka: KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_OAUTH_CLIENT_SECRET or KAFKA_OAUTH_CLIENT_SECRET_FILE")
	}
	if err := validateTokenURL(s.OAuthTokenURL); err != nil {
		return err
	}
	return validateExtensions(s.SASLExtensions)
}

// Load validates s and reads its files (CA, client certificate and key,
// password), so that a bad file fails at start, not at the first
// connection. Configurations made from s afterwards use what it read.
func (s *Security) Load() error {
	l, err := s.load()
	if err != nil {
		return err
	}
	s.loaded = l
	return nil
}

func (s Security) load() (*loadedSecurity, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	l := &loadedSecurity{password: s.SASLPassword}
	if s.SASL() && s.SASLPasswordFile != "" {
		b, err := os.ReadFile(s.SASLPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: KAFKA_SASL_PASSWORD_FILE: %w", err)
		}
		l.password = strings.TrimRight(string(b), "\r\n")
		if l.password == "" {
			return nil, fmt.Errorf("kafka: KAFKA_SASL_PASSWORD_FILE %s is empty", s.SASLPasswordFile)
		}
	}
	if s.SASL() && s.mechanism() == MechanismOAuthBearer {
		secret := s.OAuthClientSecret
		if s.OAuthClientSecretFile != "" {
			b, err := os.ReadFile(s.OAuthClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("kafka: KAFKA_OAUTH_CLIENT_SECRET_FILE: %w", err)
			}
			if secret = strings.TrimRight(string(b), "\r\n"); secret == "" {
				return nil, fmt.Errorf("kafka: KAFKA_OAUTH_CLIENT_SECRET_FILE %s is empty", s.OAuthClientSecretFile)
			}
		}
		l.tokens = NewOAuthTokenProvider(s.OAuthTokenURL, s.OAuthClientID, secret, s.OAuthScopes, s.SASLExtensions)
	}
	if s.TLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.TLSServerName}
		if s.TLSCAFile != "" {
			pem, err := os.ReadFile(s.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka: KAFKA_TLS_CA_FILE: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka: KAFKA_TLS_CA_FILE %s holds no PEM certificate", s.TLSCAFile)
			}
		}
		if s.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka: KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		l.tls = tc
	}
	return l, nil
}

// apply sets the security settings on sc. A Security that was not loaded
// is loaded here; if that fails, every connection of sc fails with the
// reason (sarama.Config has no way to refuse earlier).
func (s Security) apply(sc *sarama.Config) {
	l := s.loaded
	if l == nil {
		var err error
		if l, err = s.load(); err != nil {
			sc.Net.Proxy.Enable = true
			sc.Net.Proxy.Dialer = failDialer{securityLoadError{err}}
			return
		}
	}
	if s.TLS() {
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = l.tls.Clone()
	}
	if s.SASL() {
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Handshake = true
		if s.mechanism() == MechanismOAuthBearer {
			sc.Net.SASL.Mechanism = sarama.SASLTypeOAuth
			sc.Net.SASL.TokenProvider = l.tokens
			return
		}
		sc.Net.SASL.User = s.SASLUsername
		sc.Net.SASL.Password = l.password
		if s.mechanism() == MechanismPlain {
			sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
			return
		}
		hash := scram.SHA512
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		if s.mechanism() == MechanismSCRAMSHA256 {
			hash = scram.SHA256
			sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		}
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: hash} }
	}
}

// securityLoadError is why the security settings could not be loaded.
type securityLoadError struct{ err error }

func (e securityLoadError) Error() string { return e.err.Error() }
func (e securityLoadError) Unwrap() error { return e.err }

// failDialer refuses every connection with the reason the security
// settings could not be loaded.
type failDialer struct{ err error }

func (d failDialer) Dial(_, _ string) (net.Conn, error) { return nil, d.err }

// LogValue describes s without its secrets, for logs.
func (s Security) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("protocol", s.protocol())}
	if s.TLS() {
		attrs = append(attrs, slog.String("tls_ca_file", s.TLSCAFile), slog.Bool("tls_client_cert", s.TLSCertFile != ""))
	}
	switch {
	case s.SASL() && s.mechanism() == MechanismOAuthBearer:
		attrs = append(attrs, slog.String("sasl_mechanism", s.mechanism()), slog.String("oauth_token_url", redactURL(s.OAuthTokenURL)),
			slog.String("oauth_client_id", s.OAuthClientID), slog.String("oauth_scopes", strings.Join(s.OAuthScopes, " ")))
	case s.SASL():
		attrs = append(attrs, slog.String("sasl_mechanism", s.mechanism()), slog.String("sasl_username", s.SASLUsername))
	}
	return slog.GroupValue(attrs...)
}

// String describes s without its secrets.
func (s Security) String() string {
	out := s.protocol()
	switch {
	case s.SASL() && s.mechanism() == MechanismOAuthBearer:
		out += " " + s.mechanism() + " client " + s.OAuthClientID
	case s.SASL():
		out += " " + s.mechanism() + " user " + s.SASLUsername
	}
	return out
}

// scramClient is sarama's SCRAMClient on github.com/xdg-go/scram.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }

func (c *scramClient) Done() bool { return c.conv.Done() }

var _ sarama.SCRAMClient = (*scramClient)(nil)

// SecurityFlags holds the raw security settings until Security is called.
type SecurityFlags struct {
	envPrefix                                              string
	protocol, ca, cert, key, serverName, mech, user, pfile *string
	tokenURL, clientID, secretFile, scopes, extensions     *string
}

// RegisterSecurityFlags registers the security settings on fs, as flags
// <flagPrefix>security-protocol, ... and variables <envPrefix>SECURITY_PROTOCOL,
// ... (RegisterFlags uses "kafka-" and "KAFKA_"). The password and the
// OAuth client secret are never flags, which would show in the process
// list and in -h: they come from <envPrefix>SASL_PASSWORD and
// <envPrefix>OAUTH_CLIENT_SECRET, or from the files
// <envPrefix>SASL_PASSWORD_FILE and <envPrefix>OAUTH_CLIENT_SECRET_FILE.
func RegisterSecurityFlags(fs *flag.FlagSet, flagPrefix, envPrefix string) *SecurityFlags {
	f, e := flagPrefix, envPrefix
	return &SecurityFlags{
		envPrefix:  e,
		protocol:   config.String(fs, f+"security-protocol", e+"SECURITY_PROTOCOL", ProtocolPlaintext, "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
		ca:         config.String(fs, f+"tls-ca-file", e+"TLS_CA_FILE", "", "PEM file of the CA certificates that sign the brokers' certificates (default: the system's roots)"),
		cert:       config.String(fs, f+"tls-cert-file", e+"TLS_CERT_FILE", "", "PEM client certificate, for brokers that require one"),
		key:        config.String(fs, f+"tls-key-file", e+"TLS_KEY_FILE", "", "PEM key of the client certificate"),
		serverName: config.String(fs, f+"tls-server-name", e+"TLS_SERVER_NAME", "", "host name to check the brokers' certificates against (default: the host dialled)"),
		mech:       config.String(fs, f+"sasl-mechanism", e+"SASL_MECHANISM", "", "SCRAM-SHA-512 (default with SASL), SCRAM-SHA-256, or PLAIN or OAUTHBEARER (over SASL_SSL only: they send the password or a bearer token)"),
		user:       config.String(fs, f+"sasl-username", e+"SASL_USERNAME", "", "SASL user name (SCRAM, PLAIN)"),
		pfile:      config.String(fs, f+"sasl-password-file", e+"SASL_PASSWORD_FILE", "", "file holding the SASL password (SCRAM, PLAIN)"),
		tokenURL:   config.String(fs, f+"oauth-token-url", e+"OAUTH_TOKEN_URL", "", "OAUTHBEARER: the OAuth token endpoint (client-credentials grant; https, or http to a loopback address)"),
		clientID:   config.String(fs, f+"oauth-client-id", e+"OAUTH_CLIENT_ID", "", "OAUTHBEARER: the OAuth client id"),
		secretFile: config.String(fs, f+"oauth-client-secret-file", e+"OAUTH_CLIENT_SECRET_FILE", "", "OAUTHBEARER: file holding the OAuth client secret"),
		scopes:     config.String(fs, f+"oauth-scopes", e+"OAUTH_SCOPES", "", "OAUTHBEARER: scopes to ask for, separated by spaces or commas (default: the endpoint's)"),
		extensions: config.String(fs, f+"sasl-extensions", e+"SASL_EXTENSIONS", "", "OAUTHBEARER: SASL extensions sent with the token, key=value,... (e.g. logicalCluster=lkc-1,identityPoolId=pool-1)"),
	}
}

// Security returns the settings, validated and loaded.
func (f *SecurityFlags) Security() (Security, error) {
	pass := os.Getenv(f.envPrefix + "SASL_PASSWORD")
	s := Security{
		Protocol: *f.protocol, TLSCAFile: *f.ca, TLSCertFile: *f.cert, TLSKeyFile: *f.key, TLSServerName: *f.serverName,
		SASLMechanism: *f.mech, SASLUsername: *f.user, SASLPassword: pass, SASLPasswordFile: *f.pfile,
		OAuthTokenURL: *f.tokenURL, OAuthClientID: *f.clientID,
		OAuthClientSecret: os.Getenv(f.envPrefix + "OAUTH_CLIENT_SECRET"), OAuthClientSecretFile: *f.secretFile,
		OAuthScopes: strings.FieldsFunc(*f.scopes, func(r rune) bool { return r == ',' || r == ' ' }),
	}
	ext, err := config.Map(*f.extensions)
	if err != nil {
		err = fmt.Errorf("kafka: KAFKA_SASL_EXTENSIONS: %w", err)
	}
	if len(ext) > 0 {
		s.SASLExtensions = ext
	}
	if err == nil {
		err = s.Load()
	}
	if err != nil {
		if f.envPrefix != "KAFKA_" {
			return s, renamedError{msg: strings.ReplaceAll(err.Error(), "KAFKA_", f.envPrefix), err: err}
		}
		return s, err
	}
	return s, nil
}

// renamedError is err with the settings it names under another prefix
// (TARGET_KAFKA_ for KAFKA_): the message changes, and errors.Is and
// errors.As still find what err wraps.
type renamedError struct {
	msg string
	err error
}

func (e renamedError) Error() string { return e.msg }
func (e renamedError) Unwrap() error { return e.err }
