package kafkax

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

func TestSecurityValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Security
		want string // substring of the error; "" means valid
	}{
		{"zero is plaintext", Security{}, ""},
		{"plaintext", Security{Protocol: "plaintext"}, ""},
		{"ssl with CA", Security{Protocol: "SSL", TLSCAFile: "ca.pem"}, ""},
		{"ssl with system roots", Security{Protocol: "SSL"}, ""},
		{"sasl_ssl", Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPassword: "p"}, ""},
		{"sasl_ssl sha-256", Security{Protocol: "SASL_SSL", SASLMechanism: "scram-sha-256", SASLUsername: "u", SASLPasswordFile: "f"}, ""},
		{"sasl_plaintext", Security{Protocol: "SASL_PLAINTEXT", SASLUsername: "u", SASLPassword: "p"}, ""},
		{"unknown protocol", Security{Protocol: "TLS"}, "KAFKA_SECURITY_PROTOCOL must be"},
		{"CA without TLS", Security{TLSCAFile: "ca.pem"}, "KAFKA_TLS_CA_FILE is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"},
		{"server name without TLS", Security{Protocol: "SASL_PLAINTEXT", SASLUsername: "u", SASLPassword: "p", TLSServerName: "k"}, "KAFKA_TLS_SERVER_NAME is set"},
		{"cert without key", Security{Protocol: "SSL", TLSCertFile: "c.pem"}, "give both KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE"},
		{"key without cert", Security{Protocol: "SSL", TLSKeyFile: "k.pem"}, "give both"},
		{"user without SASL", Security{Protocol: "SSL", SASLUsername: "u"}, "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=SSL does not use SASL"},
		{"password without SASL", Security{SASLPassword: "p"}, "KAFKA_SASL_PASSWORD is set"},
		{"mechanism without SASL", Security{SASLMechanism: "SCRAM-SHA-512"}, "KAFKA_SASL_MECHANISM is set"},
		{"PLAIN over TLS", Security{Protocol: "SASL_SSL", SASLMechanism: "plain", SASLUsername: "u", SASLPassword: "p"}, ""},
		{"PLAIN without TLS", Security{Protocol: "SASL_PLAINTEXT", SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: "p"}, "needs KAFKA_SECURITY_PROTOCOL=SASL_SSL"},
		{"OAUTHBEARER with a password", Security{Protocol: "SASL_SSL", SASLMechanism: "OAUTHBEARER", SASLUsername: "u", SASLPassword: "p"}, "KAFKA_SASL_USERNAME is set but KAFKA_SASL_MECHANISM=OAUTHBEARER does not use it"},
		{"unknown mechanism", Security{Protocol: "SASL_SSL", SASLMechanism: "GSSAPI", SASLUsername: "u", SASLPassword: "p"}, "must be SCRAM-SHA-512, SCRAM-SHA-256, or PLAIN or OAUTHBEARER"},
		{"no username", Security{Protocol: "SASL_SSL", SASLPassword: "p"}, "needs KAFKA_SASL_USERNAME"},
		{"no password", Security{Protocol: "SASL_SSL", SASLUsername: "u"}, "needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"},
		{"both passwords", Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPassword: "p", SASLPasswordFile: "f"}, "not both"},
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

func TestSecurityLoadAndApply(t *testing.T) {
	dir := t.TempDir()
	ca := writeTestCA(t, dir)
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := Security{Protocol: "SASL_SSL", TLSCAFile: ca, TLSServerName: "kafka.test", SASLUsername: "command-svc", SASLPasswordFile: pw}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	sc := Config{Brokers: []string{"127.0.0.1:1"}, Security: s}.ProducerSarama("t")
	if err := sc.Validate(); err != nil {
		t.Fatalf("sarama rejects the configuration: %v", err)
	}
	switch {
	case !sc.Net.TLS.Enable || sc.Net.TLS.Config == nil || sc.Net.TLS.Config.RootCAs == nil:
		t.Fatal("TLS not enabled with the CA")
	case sc.Net.TLS.Config.ServerName != "kafka.test":
		t.Fatalf("server name %q", sc.Net.TLS.Config.ServerName)
	case !sc.Net.SASL.Enable || sc.Net.SASL.Mechanism != sarama.SASLTypeSCRAMSHA512:
		t.Fatalf("SASL %v %q", sc.Net.SASL.Enable, sc.Net.SASL.Mechanism)
	case sc.Net.SASL.User != "command-svc" || sc.Net.SASL.Password != "s3cret":
		t.Fatalf("credentials %q/%q (the file's newline must be trimmed)", sc.Net.SASL.User, sc.Net.SASL.Password)
	case !sc.Net.Proxy.Enable:
		t.Fatal("a loaded configuration must dial through the process's tracking dialer")
	}
	if _, refuses := sc.Net.Proxy.Dialer.(failDialer); refuses {
		t.Fatal("a loaded configuration must dial normally, not refuse")
	}

	// The secrets never show in the descriptions meant for logs.
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "kafka", Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPassword: "hunter2"})
	secret := Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPassword: "hunter2"}
	if out := buf.String() + secret.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "sasl_username=u") {
		t.Fatalf("log output %q", out)
	}

	// PLAIN (over SASL_SSL): sarama's plaintext mechanism with the same
	// credentials, and no SCRAM client.
	ps := s
	ps.SASLMechanism = "PLAIN"
	if err := ps.Load(); err != nil {
		t.Fatal(err)
	}
	psc := Config{Brokers: []string{"127.0.0.1:1"}, Security: ps}.ProducerSarama("t")
	if err := psc.Validate(); err != nil {
		t.Fatalf("sarama rejects the PLAIN configuration: %v", err)
	}
	if !psc.Net.TLS.Enable || psc.Net.SASL.Mechanism != sarama.SASLTypePlaintext || psc.Net.SASL.Password != "s3cret" || psc.Net.SASL.SCRAMClientGeneratorFunc != nil {
		t.Fatalf("PLAIN: TLS %v, mechanism %q", psc.Net.TLS.Enable, psc.Net.SASL.Mechanism)
	}

	plain := Config{Brokers: []string{"x:1"}}.Sarama("t")
	if plain.Net.TLS.Enable || plain.Net.SASL.Enable {
		t.Fatal("the zero Security must be PLAINTEXT")
	}
}

func TestSecurityLoadErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for _, tc := range []struct {
		s    Security
		want string
	}{
		{Security{Protocol: "SSL", TLSCAFile: filepath.Join(dir, "missing.pem")}, "KAFKA_TLS_CA_FILE: open"},
		{Security{Protocol: "SSL", TLSCAFile: notPEM}, "holds no PEM certificate"},
		{Security{Protocol: "SSL", TLSCertFile: notPEM, TLSKeyFile: notPEM}, "KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE"},
		{Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPasswordFile: filepath.Join(dir, "missing")}, "KAFKA_SASL_PASSWORD_FILE: open"},
		{Security{Protocol: "SASL_SSL", SASLUsername: "u", SASLPasswordFile: empty}, "is empty"},
	} {
		err := tc.s.Load()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want %q, got %v", tc.s, tc.want, err)
		}
		// Not loaded: every connection fails with the reason.
		sc := Config{Brokers: []string{"127.0.0.1:1"}, Security: tc.s}.Sarama("t")
		if !sc.Net.Proxy.Enable {
			t.Errorf("%+v: a configuration that cannot load must not dial", tc.s)
			continue
		}
		if _, err := sc.Net.Proxy.Dialer.Dial("tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dial: want %q, got %v", tc.want, err)
		}
	}
}

func TestSecurityFlags(t *testing.T) {
	t.Setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
	t.Setenv("KAFKA_SASL_USERNAME", "projector")
	t.Setenv("KAFKA_SASL_PASSWORD", "from-env")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f := RegisterFlags(fs)
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.PrintDefaults()
	if strings.Contains(usage.String(), "from-env") {
		t.Fatal("-h prints the password")
	}
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	c, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	if c.Security.SASLUsername != "projector" || c.Security.SASLPassword != "from-env" || c.Security.loaded == nil {
		t.Fatalf("%+v", c.Security)
	}

	t.Setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	f = RegisterFlags(fs)
	_ = fs.Parse(nil)
	if _, err := f.Config(); err == nil || !strings.Contains(err.Error(), "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT") {
		t.Fatalf("want a clear error, got %v", err)
	}

	// Another prefix (the replicator's target cluster) names its own variables.
	t.Setenv("TARGET_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	tf := RegisterSecurityFlags(fs, "target-kafka-", "TARGET_KAFKA_")
	_ = fs.Parse(nil)
	if _, err := tf.Security(); err == nil || !strings.Contains(err.Error(), "needs TARGET_KAFKA_SASL_USERNAME") {
		t.Fatalf("want a TARGET_KAFKA_ error, got %v", err)
	}
	// Renamed, the error still wraps its cause.
	t.Setenv("TARGET_KAFKA_SASL_USERNAME", "u")
	t.Setenv("TARGET_KAFKA_SASL_PASSWORD_FILE", filepath.Join(t.TempDir(), "missing"))
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	tf = RegisterSecurityFlags(fs, "target-kafka-", "TARGET_KAFKA_")
	_ = fs.Parse(nil)
	if _, err := tf.Security(); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "TARGET_KAFKA_SASL_PASSWORD_FILE") {
		t.Fatalf("want a TARGET_KAFKA_SASL_PASSWORD_FILE error that is os.ErrNotExist, got %v", err)
	}
}

// TestSCRAMClient runs the client's conversation against xdg-go/scram's
// server, for both mechanisms, and with a wrong password.
func TestSCRAMClient(t *testing.T) {
	for _, h := range []scram.HashGeneratorFcn{scram.SHA512, scram.SHA256} {
		client, _ := h.NewClient("alice", "right", "")
		creds, err := client.GetStoredCredentialsWithError(scram.KeyFactors{Salt: "salt1234", Iters: 4096})
		if err != nil {
			t.Fatal(err)
		}
		server, err := h.NewServer(func(user string) (scram.StoredCredentials, error) {
			if user != "alice" {
				return scram.StoredCredentials{}, errors.New("unknown user")
			}
			return creds, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{"right", "wrong"} {
			c := &scramClient{hash: h}
			if err := c.Begin("alice", pw, ""); err != nil {
				t.Fatal(err)
			}
			conv := server.NewConversation()
			msg, err := c.Step("")
			for err == nil && !c.Done() {
				var reply string
				if reply, err = conv.Step(msg); err != nil {
					break
				}
				msg, err = c.Step(reply)
			}
			ok := err == nil && c.Done() && conv.Valid()
			if ok != (pw == "right") {
				t.Fatalf("password %s: authenticated=%v (err %v)", pw, ok, err)
			}
		}
	}
}

// writeTestCA writes a self-signed CA certificate and returns its path.
func writeTestCA(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A service fails at once, with the reason, on errors that waiting does
// not cure; other connection errors are retried.
func TestPermanentConnectErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{sarama.Wrap(sarama.ErrOutOfBrokers, sarama.ErrSASLAuthenticationFailed), true},
		{sarama.Wrap(sarama.ErrOutOfBrokers, x509.UnknownAuthorityError{}), true},
		{sarama.Wrap(sarama.ErrOutOfBrokers, x509.HostnameError{}), true},
		{sarama.Wrap(sarama.ErrOutOfBrokers, securityLoadError{errors.New("x")}), true},
		{sarama.Wrap(sarama.ErrOutOfBrokers, fmt.Errorf("%w: %w: 401", ErrOAuthToken, ErrOAuthRejected)), true},
		{sarama.Wrap(sarama.ErrOutOfBrokers, fmt.Errorf("%w: 503", ErrOAuthToken)), false},
		{sarama.Wrap(sarama.ErrOutOfBrokers, errors.New("connection refused")), false},
		{sarama.ErrOutOfBrokers, false},
	} {
		if got := permanentConnectError(tc.err); got != tc.want {
			t.Errorf("permanentConnectError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}

	c := Config{Brokers: []string{"127.0.0.1:1"}, Security: Security{Protocol: "SSL", TLSCAFile: filepath.Join(t.TempDir(), "missing.pem")}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := NewAdmin(ctx, c, "t")
	if err == nil || !strings.Contains(err.Error(), "KAFKA_TLS_CA_FILE") || time.Since(start) > 10*time.Second {
		t.Fatalf("NewAdmin = %v after %s, want the CA file's error at once", err, time.Since(start))
	}
}
