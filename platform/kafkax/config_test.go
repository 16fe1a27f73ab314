package kafkax

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestTxnRetryBackoff(t *testing.T) {
	cfg := Config{Brokers: []string{"127.0.0.1:9092"}}.ProducerSarama("test")
	if cfg.Producer.Transaction.Retry.BackoffFunc == nil {
		t.Fatal("ProducerSarama sets no transaction retry backoff")
	}
	if cfg.Producer.Flush.Frequency <= 0 || cfg.Producer.Flush.Frequency > 5*time.Millisecond {
		t.Fatalf("linger %v, want (0, 5ms]", cfg.Producer.Flush.Frequency)
	}
	max := cfg.Producer.Transaction.Retry.Max
	for _, tc := range []struct {
		retries int
		want    time.Duration
	}{{0, time.Millisecond}, {1, 2 * time.Millisecond}, {4, 16 * time.Millisecond}, {6, 64 * time.Millisecond}, {7, 100 * time.Millisecond}, {max, 100 * time.Millisecond}} {
		if got := TxnRetryBackoff(tc.retries, max); got != tc.want {
			t.Errorf("retry %d: backoff %v, want %v", tc.retries, got, tc.want)
		}
	}
	// The whole budget stays that of sarama's fixed 100 ms, within a
	// second: a coordinator that is away for a few seconds is still
	// waited for.
	var total time.Duration
	for r := range max {
		total += TxnRetryBackoff(r, max)
	}
	if fixed := time.Duration(max) * 100 * time.Millisecond; total < fixed-time.Second || total > fixed {
		t.Errorf("%d retries wait %v in all, want within a second below %v", max, total, fixed)
	}
}

// LogSarama sends sarama's lines to the logger at debug level only when
// that level is on.
func TestLogSarama(t *testing.T) {
	defer func(l sarama.StdLogger) { sarama.Logger = l }(sarama.Logger)
	var b strings.Builder
	LogSarama(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo})))
	sarama.Logger.Printf("client/metadata fetching metadata for all topics from broker %s\n", "b:9092")
	if b.Len() != 0 {
		t.Fatalf("sarama logged at info level: %q", b.String())
	}
	LogSarama(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	sarama.Logger.Printf("client/metadata fetching metadata for all topics from broker %s\n", "b:9092")
	if got := b.String(); !strings.Contains(got, `level=DEBUG msg="client/metadata fetching metadata for all topics from broker b:9092" component=sarama`) {
		t.Fatalf("sarama's line at debug: %q", got)
	}
}

func TestConsumerRetryBackoff(t *testing.T) {
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000}
	for i, w := range want {
		if got := ConsumerRetryBackoff(i + 1); got != w*time.Millisecond {
			t.Errorf("retry %d: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := ConsumerRetryBackoff(1 << 20); got != 2*time.Second {
		t.Errorf("a long run of retries: %v, want the 2 s cap", got)
	}
}
