package kafkax

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// ConnectTimeout is how long Connect waits for the brokers.
const ConnectTimeout = 2 * time.Minute

// Connect returns a client for clientID (made by NewClient, so that
// WatchFences looks after it), waiting up to ConnectTimeout for the
// brokers (as NewAdmin does), so that a service may start before its
// broker. The caller owns the client and closes it.
func Connect(ctx context.Context, c Config, clientID string) (sarama.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	client, err := dial(ctx, c, clientID, NewClient)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return client, nil
}

// NewAdmin connects an admin client, retrying until ctx ends so that a
// service may start before its broker is ready. Errors that waiting does
// not cure (refused credentials, a certificate that does not verify,
// security files that cannot be read, an OAuth client the token endpoint
// refuses) return at once. The caller owns the
// admin and closes it.
func NewAdmin(ctx context.Context, c Config, clientID string) (sarama.ClusterAdmin, error) {
	return dial(ctx, c, clientID, sarama.NewClusterAdmin)
}

// dial calls open until it succeeds, fails permanently or ctx ends.
func dial[T any](ctx context.Context, c Config, clientID string, open func([]string, *sarama.Config) (T, error)) (T, error) {
	for {
		v, err := open(c.Brokers, c.Sarama(clientID))
		if err == nil {
			return v, nil
		}
		if permanentConnectError(err) {
			return v, fmt.Errorf("connect to Kafka at %s as %s: %w", strings.Join(c.Brokers, ","), c.Security, err)
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("connect to Kafka at %s: %w", strings.Join(c.Brokers, ","), err)
		case <-time.After(time.Second):
		}
	}
}

// permanentConnectError reports the connection errors that retrying does
// not cure: the brokers refused the SASL credentials, the OAuth token
// endpoint refused the client's, a broker's certificate did not verify,
// or the security settings could not be loaded.
func permanentConnectError(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var load securityLoadError
	return errors.Is(err, sarama.ErrSASLAuthenticationFailed) || errors.Is(err, ErrOAuthRejected) || errors.As(err, &unknownCA) ||
		errors.As(err, &badHost) || errors.As(err, &invalid) || errors.As(err, &verify) || errors.As(err, &load)
}
