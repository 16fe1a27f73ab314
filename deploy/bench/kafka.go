package bench

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// UID is the uid of the i-th seeded profile.
func UID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

// Email is the email of the i-th seeded profile (already normalized).
func Email(i int) string { return fmt.Sprintf("user%d@bench.example", i) }

// SeedResult describes what Seed wrote.
type SeedResult struct {
	Events  int           `json:"events"`
	Took    time.Duration `json:"-"`
	Seconds float64       `json:"seconds"`
	Rate    float64       `json:"events_per_s"`
	// RecordBytes is the mean size of a record: key, value and headers.
	RecordBytes int `json:"record_bytes"`
}

// EventWriter writes events straight into an event log, the way
// command-svc places them (keyed by uid, placed like the Java client,
// acks=all), with an asynchronous idempotent sarama producer. It bypasses
// the API, which would measure the API rather than the load. Write may be
// called from one goroutine; Close waits for every write.
//
// With a KEK, it seals them as command-svc does: a ProfileCreated writes
// a new data key, sealed, to the keys topic, the events' personal fields
// are encrypted with it, and a ProfileDeleted tombstones it (not in one
// transaction: nothing reads the topics while a seed runs). Without one,
// the events are in clear, as events from before encryption.
type EventWriter struct {
	KEK *pii.KEK

	codec    *pii.Codec // of KEK, made at the first sealed Write
	producer sarama.AsyncProducer
	topic    string
	keys     string
	source   string
	dks      map[string]*pii.DataKey
	failed   atomic.Int64
	firstErr atomic.Value
	wg       sync.WaitGroup
	// Bytes is the size of what Write wrote: keys, values and headers.
	Bytes int64
}

// NewEventWriter returns an EventWriter to kcfg.EventsTopic; source is the
// events' CloudEvents source header.
func NewEventWriter(kcfg topology.Config, clientID, source string) (*EventWriter, error) {
	cfg := kcfg.ProducerSarama(clientID)
	cfg.Producer.Flush.Bytes = 256 << 10
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	producer, err := sarama.NewAsyncProducer(kcfg.Brokers, cfg)
	if err != nil {
		return nil, err
	}
	w := &EventWriter{producer: producer, topic: kcfg.EventsTopic, keys: kcfg.KeysTopic, source: source, dks: map[string]*pii.DataKey{}}
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		for range producer.Successes() {
		}
	}()
	go func() {
		defer w.wg.Done()
		for perr := range producer.Errors() {
			w.failed.Add(1)
			w.firstErr.CompareAndSwap(nil, perr.Err.Error())
		}
	}()
	return w, nil
}

// Write queues e (and its key record, see EventWriter).
func (w *EventWriter) Write(e events.Event) error {
	var (
		value []byte
		err   error
	)
	switch _, del := e.Data.(events.ProfileDeleted); {
	case w.KEK == nil:
		value, err = events.Encode(e)
	case del:
		delete(w.dks, e.UID)
		w.producer.Input() <- &sarama.ProducerMessage{Topic: w.keys, Key: sarama.StringEncoder(e.UID)}
		value, err = events.Encode(e)
	default:
		dk := w.dks[e.UID]
		if dk == nil {
			var raw, sealed []byte
			if dk, raw, err = w.KEK.NewDataKey(e.UID); err != nil {
				return err
			}
			sealed, err = w.KEK.Seal(e.UID, raw)
			clear(raw)
			if err != nil {
				return err
			}
			w.dks[e.UID] = dk
			w.producer.Input() <- &sarama.ProducerMessage{Topic: w.keys, Key: sarama.StringEncoder(e.UID), Value: sarama.ByteEncoder(sealed)}
		}
		if w.codec == nil {
			w.codec = pii.NewCodec(w.KEK, nil)
		}
		value, err = w.codec.EncodeEvent(e, dk)
	}
	if err != nil {
		return err
	}
	var headers []sarama.RecordHeader
	size := len(e.UID) + len(value)
	for k, v := range events.Headers(e, w.source) {
		headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
		size += len(k) + len(v)
	}
	w.Bytes += int64(size)
	w.producer.Input() <- &sarama.ProducerMessage{Topic: w.topic, Key: sarama.StringEncoder(e.UID), Value: sarama.ByteEncoder(value), Headers: headers}
	return nil
}

// Close waits until every queued event is written or failed, and returns
// an error if any failed.
func (w *EventWriter) Close() error {
	w.producer.AsyncClose()
	w.wg.Wait()
	if n := w.failed.Load(); n > 0 {
		return fmt.Errorf("%d events not written: %v", n, w.firstErr.Load())
	}
	return nil
}

// Seed writes n ProfileCreated events into the event log with an
// EventWriter, sealed with kek (in clear when it is nil): profile i is
// UID(i), "user<i>", Email(i).
func Seed(ctx context.Context, kcfg topology.Config, kek *pii.KEK, n int) (SeedResult, error) {
	w, err := NewEventWriter(kcfg, "bench-seed", "/bench-seed")
	if err != nil {
		return SeedResult{}, err
	}
	w.KEK = kek
	start := time.Now()
	at := start.Add(-time.Hour)
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		e := events.New(fmt.Sprintf("bench-%d", i), events.Profile{}, UID(i),
			events.ProfileCreated{Username: fmt.Sprintf("user%d", i), Email: Email(i)}, at.Add(time.Duration(i)*time.Microsecond))
		if err := w.Write(e); err != nil {
			_ = w.Close()
			return SeedResult{}, err
		}
	}
	cerr := w.Close()
	took := time.Since(start)
	if err := ctx.Err(); err != nil {
		return SeedResult{}, err
	}
	if cerr != nil {
		return SeedResult{}, fmt.Errorf("seed: %w", cerr)
	}
	res := SeedResult{Events: n, Took: took, Seconds: round2(took.Seconds()), Rate: float64(n) / took.Seconds()}
	if n > 0 {
		res.RecordBytes = int(w.Bytes / int64(n))
	}
	return res, nil
}

// createTopic creates a plain topic (delete policy) with the given
// partitions, for Kafka's ProducerPerformance.
func createTopic(brokers []string, name string, partitions int32) error {
	admin, err := sarama.NewClusterAdmin(brokers, kafkax.Config{}.Sarama("bench-admin"))
	if err != nil {
		return err
	}
	defer admin.Close()
	err = admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	return nil
}

// ProducePerf is the summary line of Kafka's ProducerPerformance.
type ProducePerf struct {
	Records    int64   `json:"records"`
	RecordSize int     `json:"record_size"`
	Throughput float64 `json:"throughput_per_s"` // records per second
	MBPerSec   float64 `json:"mb_per_s"`
	// Target is the rate asked for (--throughput); 0 = as fast as it can.
	Target float64 `json:"target_per_s,omitempty"`
	Props  string  `json:"producer_props"`
	AvgMs  float64 `json:"avg_ms"`
	MaxMs  float64 `json:"max_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P95Ms  float64 `json:"p95_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p99_9_ms"`
}

var producePerfLine = regexp.MustCompile(`(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th`)

// ParseProducePerf reads the final summary of ProducerPerformance's output.
func ParseProducePerf(out string) (ProducePerf, error) {
	all := producePerfLine.FindAllStringSubmatch(out, -1)
	if len(all) == 0 {
		return ProducePerf{}, fmt.Errorf("no ProducerPerformance summary in:\n%s", tail(out, 2000))
	}
	m := all[len(all)-1]
	f := func(i int) float64 { v, _ := strconv.ParseFloat(m[i], 64); return v }
	return ProducePerf{
		Records: int64(f(1)), Throughput: f(2), MBPerSec: f(3), AvgMs: f(4), MaxMs: f(5),
		P50Ms: f(6), P95Ms: f(7), P99Ms: f(8), P999Ms: f(9),
	}, nil
}

// ConsumePerf is the result line of Kafka's ConsumerPerformance.
type ConsumePerf struct {
	Messages int64   `json:"messages"`
	MB       float64 `json:"mb"`
	// Throughput counts the whole run, FetchThroughput only the fetching
	// (without the group join); the ceiling is the latter.
	Throughput      float64 `json:"throughput_per_s"`
	FetchThroughput float64 `json:"fetch_throughput_per_s"`
	RebalanceMs     float64 `json:"rebalance_ms"`
	FetchMs         float64 `json:"fetch_ms"`
}

// ParseConsumePerf reads the CSV line of ConsumerPerformance's output:
// start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
// nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec.
func ParseConsumePerf(out string) (ConsumePerf, error) {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Split(lines[i], ",")
		if len(f) != 10 || strings.Contains(lines[i], "start.time") {
			continue
		}
		var v [10]float64
		ok := true
		for j := 2; j < 10; j++ {
			x, err := strconv.ParseFloat(strings.TrimSpace(f[j]), 64)
			if err != nil {
				ok = false
				break
			}
			v[j] = x
		}
		if !ok {
			continue
		}
		return ConsumePerf{MB: v[2], Messages: int64(v[4]), Throughput: v[5], RebalanceMs: v[6], FetchMs: v[7], FetchThroughput: v[9]}, nil
	}
	return ConsumePerf{}, fmt.Errorf("no ConsumerPerformance result in:\n%s", tail(out, 2000))
}

// kafkaTool runs deploy/kafka.sh tool CLASS ARGS and returns its output.
func kafkaTool(ctx context.Context, repo string, class string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "deploy", "kafka.sh"), append([]string{"tool", class}, args...)...)
	cmd.Dir = repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %v\n%s", class, err, tail(out.String(), 2000))
	}
	return out.String(), nil
}

// RunProducePerf runs Kafka's ProducerPerformance: n records of size bytes
// with acks=all, at rate per second (0: as fast as it can), plus props.
func RunProducePerf(ctx context.Context, repo, brokers, topic string, n, size int, rate float64, props ...string) (ProducePerf, error) {
	throughput := "-1"
	if rate > 0 {
		throughput = strconv.FormatFloat(rate, 'f', 0, 64)
	}
	all := append([]string{"bootstrap.servers=" + brokers, "acks=all"}, props...)
	args := append([]string{"--topic", topic, "--num-records", strconv.Itoa(n), "--record-size", strconv.Itoa(size),
		"--throughput", throughput, "--producer-props"}, all...)
	out, err := kafkaTool(ctx, repo, "org.apache.kafka.tools.ProducerPerformance", args...)
	if err != nil {
		return ProducePerf{}, err
	}
	p, err := ParseProducePerf(out)
	p.RecordSize, p.Target, p.Props = size, rate, strings.Join(all[1:], " ")
	return p, err
}

// RunConsumePerf runs Kafka's ConsumerPerformance over n records of topic,
// in a consumer group of its own.
func RunConsumePerf(ctx context.Context, repo, brokers, topic, group string, n int) (ConsumePerf, error) {
	out, err := kafkaTool(ctx, repo, "org.apache.kafka.tools.ConsumerPerformance",
		"--bootstrap-server", brokers, "--topic", topic, "--messages", strconv.Itoa(n), "--group", group, "--timeout", "60000")
	if err != nil {
		return ConsumePerf{}, err
	}
	return ParseConsumePerf(out)
}

// ReplayResult is the summary of `replay snapshots`.
type ReplayResult struct {
	Events int64 `json:"events"`
	// Rate is what the CLI reports: events folded per second of reading
	// and folding the log.
	Rate        float64 `json:"events_per_s"`
	ReadSeconds float64 `json:"read_fold_seconds"`
	// WriteSeconds writing the snapshots and the index; Records written.
	Records      int64   `json:"records_written"`
	WriteSeconds float64 `json:"write_seconds"`
	// WallSeconds is the whole CLI run, start to exit.
	WallSeconds float64 `json:"wall_seconds"`
	Summary     string  `json:"summary"`
}

var replayLine = regexp.MustCompile(`generation \d+ built: (\d+) events folded in (\S+) \(([\d.]+) events/s\).*; (\d+) records written in (\S+)`)

// ParseReplay reads the summary line of `replay snapshots`.
func ParseReplay(out string) (ReplayResult, error) {
	m := replayLine.FindStringSubmatch(out)
	if m == nil {
		return ReplayResult{}, fmt.Errorf("no replay summary in:\n%s", tail(out, 2000))
	}
	events, _ := strconv.ParseInt(m[1], 10, 64)
	read, err1 := time.ParseDuration(m[2])
	rate, _ := strconv.ParseFloat(m[3], 64)
	records, _ := strconv.ParseInt(m[4], 10, 64)
	write, err2 := time.ParseDuration(m[5])
	if err1 != nil || err2 != nil {
		return ReplayResult{}, fmt.Errorf("replay summary %q: %v %v", m[0], err1, err2)
	}
	line := m[0]
	if i := strings.Index(out, m[0]); i >= 0 {
		if j := strings.LastIndex(out[:i], "\n"); j >= 0 {
			line = strings.TrimSpace(out[j+1 : i+len(m[0])])
		}
	}
	return ReplayResult{Events: events, Rate: rate, ReadSeconds: round3(read.Seconds()), Records: records, WriteSeconds: round3(write.Seconds()), Summary: line}, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
