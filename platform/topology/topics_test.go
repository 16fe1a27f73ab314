package topology

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// A start asks a broker that cannot be reached again, and gives up at
// once on any other error, or when its context ends.
func TestUntilReachable(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	t.Run("retries a refused connection until it succeeds", func(t *testing.T) {
		calls := 0
		err := untilReachable(context.Background(), func() error {
			if calls++; calls < 3 {
				return refused
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Errorf("err %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("gives up at once on another error", func(t *testing.T) {
		calls := 0
		err := untilReachable(context.Background(), func() error { calls++; return sarama.ErrTopicAuthorizationFailed })
		if !errors.Is(err, sarama.ErrTopicAuthorizationFailed) || calls != 1 {
			t.Errorf("err %v after %d calls, want the authorization error after 1", err, calls)
		}
	})
	t.Run("returns the last error when the context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		defer cancel()
		calls := 0
		err := untilReachable(ctx, func() error { calls++; return refused })
		if !errors.Is(err, syscall.ECONNREFUSED) || calls < 2 {
			t.Errorf("err %v after %d calls, want the refusal after 2 or more", err, calls)
		}
	})
}
