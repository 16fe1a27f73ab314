package kafkax

import (
	"testing"
	"time"
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
