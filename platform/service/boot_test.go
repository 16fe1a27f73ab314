package service

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"profiles/platform/testenv"
)

func parseKafkaFlags(t *testing.T, args ...string) *KafkaFlags {
	t.Helper()
	t.Setenv("PII_KEK", "")
	t.Setenv("PII_KEK_FILE", "")
	t.Setenv("PII_KEK_DEV", "")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f := RegisterKafkaFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// NewBoot reads the Kafka settings and loads the KEK, and refuses to
// start without a KEK, unless it is made without PII settings.
func TestNewBootLoadsTheKEKOnlyWithPIISettings(t *testing.T) {
	f := parseKafkaFlags(t, "-kafka-brokers", "a:1,b:2", "-pii-kek-dev")
	b, err := NewBoot("test", discard(), f)
	if err != nil {
		t.Fatal(err)
	}
	if b.KEK == nil || b.Client != nil || b.Keyring != nil || b.Codec != nil {
		t.Fatalf("KEK %v, Client %v, Keyring %v: want only a KEK before Connect", b.KEK, b.Client, b.Keyring)
	}
	if !reflect.DeepEqual(b.Kafka.Brokers, []string{"a:1", "b:2"}) {
		t.Fatalf("brokers %v", b.Kafka.Brokers)
	}

	f = parseKafkaFlags(t)
	if _, err := NewBoot("test", discard(), f); err == nil || !strings.Contains(err.Error(), "PII_KEK") {
		t.Fatalf("without a KEK: %v, want an error naming PII_KEK", err)
	}
	b, err = NewBoot("test", discard(), &KafkaFlags{Kafka: f.Kafka})
	if err != nil || b.KEK != nil {
		t.Fatalf("without PII settings: KEK %v, %v; want none and no error", b.KEK, err)
	}

	f = parseKafkaFlags(t, "-pii-kek-dev", "-kafka-security-protocol", "bogus")
	if _, err := NewBoot("test", discard(), f); err == nil || !strings.Contains(err.Error(), "KAFKA_SECURITY_PROTOCOL") {
		t.Fatalf("bad Kafka settings: %v, want an error naming KAFKA_SECURITY_PROTOCOL", err)
	}
}

// Close runs what was deferred, the last first, once; Background's task
// ends at Close.
func TestBootCloseRunsTheLastDeferredFirst(t *testing.T) {
	b := &Boot{Name: "test", Log: discard()}
	var order []string
	b.Defer(func() { order = append(order, "first") })
	b.DeferClose(closerFunc(func() error { order = append(order, "second"); return errors.New("dropped") }))
	ended := make(chan struct{})
	b.Background(context.Background(), func(ctx context.Context) error {
		<-ctx.Done()
		close(ended)
		return ctx.Err()
	})
	b.Defer(func() { order = append(order, "third") })
	b.Close()
	b.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the background task did not end at Close")
	}
	if want := []string{"third", "second", "first"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("closed %v, want %v", order, want)
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// Start gives f a Boot of the binary's name and closes it afterwards;
// without Kafka settings the Boot has only its name and logger.
func TestStartClosesTheBootAfterF(t *testing.T) {
	var closed bool
	err := Start("tool", discard(), nil, func(ctx context.Context, b *Boot) error {
		if b.Name != "tool" || b.Log == nil || b.Client != nil {
			t.Errorf("boot %+v", b)
		}
		b.Defer(func() { closed = true })
		return errors.New("done")
	})
	if err == nil || err.Error() != "done" || !closed {
		t.Fatalf("Start returned %v, closed %v; want f's error and a closed Boot", err, closed)
	}
}

// Run logs "starting" with the root's attributes, then serves until ctx
// ends.
func TestApplicationRunLogsStarting(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	common := RegisterFlags(fs, "127.0.0.1:0")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app := common.Application(log, NewRouter(log, nil), func(tctx context.Context) error {
		cancel()
		<-tctx.Done()
		return nil
	})
	app.Starting = []any{"sink", "kafka"}
	if err := app.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "msg=starting sink=kafka") {
		t.Fatalf("log %q has no starting line with the attributes", buf.String())
	}
}

// Connect connects, and with a KEK starts the keyring and makes the codec;
// Close closes both.
func TestBootConnectStartsTheKeyring(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	suffix := fmt.Sprintf("%06d", rand.IntN(1e6))
	var args []string
	for _, flagName := range []string{"events-topic", "snapshots-topic", "email-index-topic", "claims-topic", "dead-letter-topic", "control-topic", "keys-topic"} {
		args = append(args, "-"+flagName, "service-test-"+flagName+"-"+suffix)
	}
	f := parseKafkaFlags(t, append(args, "-kafka-brokers", strings.Join(brokers, ","), "-pii-kek-dev", "-topic-partitions", "2")...)
	b, err := NewBoot("service-test", discard(), f)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Client == nil || b.Keyring == nil || b.Codec == nil {
		t.Fatalf("Client %v, Keyring %v, Codec %v after Connect", b.Client, b.Keyring, b.Codec)
	}
	if want := b.Codec.EmailKey("a@x.org"); b.Codec.EmailKey(" A@X.org ") != want || want == "a@x.org" {
		t.Fatal("the codec's email key is not an HMAC of the normalized email")
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.RunKeys(runCtx) }()
	stop()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("RunKeys did not return when its context ended")
	}
}
