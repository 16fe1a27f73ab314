package service

import (
	"time"

	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// KafkaFlags are the settings of a binary that reads the profiles topics:
// Kafka (topology.Flags) and personal data (pii.Flags).
type KafkaFlags struct {
	Kafka *topology.Flags
	PII   *pii.Flags
}

// RegisterKafkaFlags registers the Kafka and personal data settings on fs.
func RegisterKafkaFlags(fs *flag.FlagSet) *KafkaFlags {
	return &KafkaFlags{Kafka: topology.RegisterFlags(fs), PII: pii.RegisterFlags(fs)}
}

// Boot is the start-up that every binary reading the profiles topics
// shares, in its order: NewBoot reads the Kafka settings and loads the
// key-encryption key; Connect connects to Kafka, starts the process's
// fence watch (kafkax.WatchFences), starts the keyring of the
// profiles' data keys and installs the keys; RunKeys (a Task for Run)
// follows the keys topic. Close then releases, last acquired first,
// everything the Boot and its composition root acquired (see Defer).
//
// A Boot belongs to one goroutine, its main's: only RunKeys and Codec
// may be used from others. Its zero value is not usable; use NewBoot.
type Boot struct {
	// Name is the binary's name, the client id of its Kafka clients.
	Name string
	Log  *slog.Logger
	// Kafka is the parsed and validated Kafka configuration.
	Kafka topology.Config
	// KEK is the key-encryption key of personal data; nil until loaded.
	KEK *pii.KEK
	// Client is the binary's Kafka client; nil until Connect.
	Client sarama.Client
	// Keyring holds the profiles' data keys, following the keys topic
	// (see RunKeys); nil until the keys are installed.
	Keyring *pii.Keyring
	// Codec seals and opens the personal data of events and snapshots
	// with the keyring's data keys, and keys emails; nil until the keys
	// are installed. It is passed to every reader and writer.
	Codec *pii.Codec
	// StopTimeout bounds Close when Start closes the Boot (STOP_TIMEOUT;
	// 0 means DefaultStopTimeout): a Kafka client's close can wait for
	// brokers that cannot be reached.
	StopTimeout time.Duration

	closers []func()
}

// NewBoot reads f's Kafka settings and, unless f.PII is nil, loads the
// key-encryption key, warning on log under PII_KEK_DEV. A binary that
// needs the keys for only some of its work passes f without PII and calls
// OpenKeys when it knows it does. Call Close when done.
func NewBoot(name string, log *slog.Logger, f *KafkaFlags) (*Boot, error) {
	kcfg, err := f.Kafka.Config()
	if err != nil {
		return nil, err
	}
	b := &Boot{Name: name, Log: log, Kafka: kcfg}
	kafkax.LogSarama(log) // at LOG_LEVEL=debug
	if f.PII != nil {
		if b.KEK, err = f.PII.KEK(log); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Connect connects to Kafka (topology.Connect: it ensures the base topics,
// waiting for the broker) and, when the KEK is loaded, starts the keyring
// and installs the keys. Run RunKeys among the binary's tasks (or with
// Background) so that the keyring follows the keys topic.
func (b *Boot) Connect(ctx context.Context) error {
	client, err := topology.Connect(ctx, b.Kafka, b.Name)
	if err != nil {
		return err
	}
	b.Client = client
	b.DeferClose(client)
	// Every Kafka client of the process is rebootstrapped from the live
	// brokers when it still knows one that the cluster has fenced.
	watch, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		kafkax.WatchFences(watch, b.Kafka.Config, kafkax.FenceOptions{Topic: b.Kafka.EventsTopic}, b.Log)
	}()
	b.Defer(func() { stop(); <-done })
	if b.KEK == nil {
		return nil
	}
	return b.installKeys()
}

// OpenKeys loads the key-encryption key from f, starts the keyring and
// installs the keys, for a Boot made without PII settings, after Connect.
func (b *Boot) OpenKeys(f *pii.Flags) error {
	kek, err := f.KEK(b.Log)
	if err != nil {
		return err
	}
	b.KEK = kek
	return b.installKeys()
}

// installKeys makes the keyring of the profiles' data keys and the codec
// that reads and writes personal data with it. It is the one place where
// a binary's keys are wired.
func (b *Boot) installKeys() error {
	keyring, err := pii.NewKeyring(b.Kafka, b.Name, b.KEK, b.Log)
	if err != nil {
		return err
	}
	b.Keyring = keyring
	b.Defer(keyring.Close)
	b.Codec = pii.NewCodec(b.KEK, keyring)
	return nil
}

// RunKeys follows the keys topic until ctx ends (a Task for Run). It must
// only be run once the keys are installed (Connect with a KEK, or
// OpenKeys).
func (b *Boot) RunKeys(ctx context.Context) error { return b.Keyring.Run(ctx) }

// Background runs task in a goroutine of its own until Close, or until ctx
// ends; its error is dropped. It is for tools such as replay that run no
// service.Run.
func (b *Boot) Background(ctx context.Context, task Task) {
	ctx, stop := context.WithCancel(ctx)
	b.Defer(stop)
	go func() { _ = task(ctx) }()
}

// Defer adds f to what Close runs; Close runs the last added first.
func (b *Boot) Defer(f func()) { b.closers = append(b.closers, f) }

// DeferClose is Defer for c.Close, whose error is dropped.
func (b *Boot) DeferClose(c io.Closer) { b.Defer(func() { _ = c.Close() }) }

// Close runs what Connect, OpenKeys, Background and the callers of Defer
// added, the last added first. It is safe to call once the service has
// stopped, and more than once.
func (b *Boot) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}
