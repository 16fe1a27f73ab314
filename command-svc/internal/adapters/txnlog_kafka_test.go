package adapters_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"profiles/command-svc/internal/adapters"
	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/testenv"
	"profiles/platform/topology"
)

// testKafka returns the test broker's config for a fresh one-partition
// event log, or skips (loudly) or fails when there is no broker.
func testKafka(t *testing.T) topology.Config {
	t.Helper()
	prefix := fmt.Sprintf("txnlog-%06d", rand.IntN(1e6))
	cfg := topology.Config{Config: kafkax.Config{Brokers: testenv.KafkaBrokers(t)}, EventsTopic: prefix + ".events", ClaimsTopic: prefix + ".claims",
		KeysTopic: prefix + ".keys", DeadLetterTopic: prefix + ".dlq", ControlTopic: prefix + ".control", Partitions: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := topology.CreateTopics(ctx, cfg, "txnlog-test", cfg.BaseSpecs()); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// member is one member of a real consumer group over the event log: its
// sessions arrive on sessions, as kafkax.Group hands them to Assigned.
type member struct {
	sessions chan kafkax.Session
	stop     context.CancelFunc
	done     chan struct{}
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	var parts []int32
	for _, ps := range s.Claims() {
		parts = append(parts, ps...)
	}
	m.sessions <- kafkax.Session{Partitions: parts, Generation: s.GenerationID(), MemberID: s.MemberID()}
	return nil
}
func (m *member) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, _ sarama.ConsumerGroupClaim) error {
	<-s.Context().Done()
	return nil
}

// join makes a new member of group; Close it with leave.
func join(t *testing.T, cfg topology.Config, group string) *member {
	t.Helper()
	sc := cfg.Sarama("txnlog-member")
	sc.Consumer.Group.Rebalance.Timeout = 3 * time.Second
	cg, err := sarama.NewConsumerGroup(cfg.Brokers, group, sc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{sessions: make(chan kafkax.Session, 8), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		defer cg.Close()
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{cfg.EventsTopic}, m); err != nil && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return m
}

func (m *member) leave() { m.stop(); <-m.done }

// next returns the member's next session that has partitions, or fails.
func (m *member) next(t *testing.T) kafkax.Session {
	t.Helper()
	for deadline := time.After(30 * time.Second); ; {
		select {
		case s := <-m.sessions:
			if len(s.Partitions) > 0 {
				return s
			}
		case <-deadline:
			t.Fatal("no session with partitions within 30s")
		}
	}
}

// A writer whose group session has been superseded (the group moved to a
// later generation without it: a paused or deposed instance) can never
// append: the group coordinator refuses the transaction's offsets, the
// transaction aborts, nothing of it is in the log, and the writer is told
// so that command-svc can rejoin its group (TxnEventLog.Fenced). The
// member of the new generation appends.
func TestAWriterOfAnOldGenerationIsFencedAndTold(t *testing.T) {
	for _, stays := range []bool{false, true} {
		name := map[bool]string{false: "its member left the group", true: "its member is in the new generation too"}[stays]
		t.Run(name, func(t *testing.T) { testOldGenerationFenced(t, stays) })
	}
}

func testOldGenerationFenced(t *testing.T, stays bool) {
	cfg := testKafka(t)
	group := cfg.EventsTopic + ".group"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fenced := make(chan string, 4)
	newLog := func(id string) *adapters.TxnEventLog {
		return &adapters.TxnEventLog{Config: cfg, ClientID: id, TxnPrefix: cfg.EventsTopic, Group: group, Source: "/test/" + id, Log: log,
			Fenced: func(reason string) { fenced <- reason }}
	}
	old, current := newLog("old"), newLog("new")
	defer old.Close()
	defer current.Close()
	ctx := context.Background()
	created := events.New("e1", events.Profile{}, "u1", events.ProfileCreated{Username: "u", Email: "u@mail.com"}, time.Now())

	a := join(t, cfg, group)
	old.Assigned(a.next(t))
	if err := old.Append(ctx, nil, created); err != nil {
		t.Fatalf("append by the only writer: %v", err)
	}
	// B joins (and A leaves, or rejoins the new generation): the group
	// moves on, and old still holds the session of the earlier
	// generation, as a paused instance would.
	if stays {
		defer a.leave()
	} else {
		a.leave()
	}
	b := join(t, cfg, group)
	defer b.leave()
	// The member that holds the partition in the new generation writes
	// through current (with one partition, it may be A again).
	var next kafkax.Session
	for deadline := time.After(30 * time.Second); len(next.Partitions) == 0; {
		select {
		case next = <-a.sessions:
		case next = <-b.sessions:
		case <-deadline:
			t.Fatal("no session of the new generation within 30s")
		}
	}
	current.Assigned(next)

	changed := events.New("e2", events.Profile{Version: 1}, "u1", events.UsernameChanged{Username: "zombie"}, time.Now())
	if err := old.Append(ctx, nil, changed); !errors.Is(err, adapters.ErrNotWriter) {
		t.Fatalf("append by the writer of the old generation = %v; want ErrNotWriter", err)
	}
	select {
	case reason := <-fenced:
		t.Logf("fenced: %s", reason)
	case <-time.After(10 * time.Second):
		t.Fatal("Fenced was not called")
	}
	if err := old.Append(ctx, nil, changed); !errors.Is(err, adapters.ErrNotWriter) {
		t.Fatalf("second append by the fenced writer = %v; want ErrNotWriter", err)
	}
	changed.Data = events.UsernameChanged{Username: "current"}
	if err := current.Append(ctx, nil, changed); err != nil {
		t.Fatalf("append by the current writer: %v", err)
	}
	select {
	case reason := <-fenced:
		t.Fatalf("Fenced called again: %s", reason)
	default:
	}
	seen, _ := keysInLog(t, cfg)
	if seen["u1"] != 2 {
		t.Fatalf("u1 is in the log %d times; want 2 (the create and the current writer's change)", seen["u1"])
	}
}

// An event and a claim of one command, and appends of several
// partitions, share one transaction: all of them are in the log.
func TestAClaimAndItsEventAreOneTransaction(t *testing.T) {
	cfg := testKafka(t)
	group := cfg.EventsTopic + ".group"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := &adapters.TxnEventLog{Config: cfg, ClientID: "claims", TxnPrefix: cfg.EventsTopic, Group: group, Source: "/test/claims", Log: log}
	defer w.Close()
	m := join(t, cfg, group)
	defer m.leave()
	w.Assigned(m.next(t))
	created := events.New("e1", events.Profile{}, "u1", events.ProfileCreated{Username: "u", Email: "u@mail.com"}, time.Now())
	claim := app.ClaimRecord{Email: "key-of-u", Claim: events.Claim{UID: "u1", ClaimedAt: time.Now(), Seq: 1}}
	if err := w.Append(context.Background(), []app.ClaimRecord{claim}, created); err != nil {
		t.Fatal(err)
	}
	client, err := topology.Connect(context.Background(), cfg, "txnlog-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var claims []string
	err = kafkax.Read(context.Background(), client, kafkax.ReadOptions{
		Topic: cfg.ClaimsTopic, Partitions: []int32{0}, StopAtEnd: true,
		Start: func(int32) (int64, error) { return sarama.OffsetOldest, nil },
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			for _, r := range recs {
				claims = append(claims, string(r.Key))
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen, _ := keysInLog(t, cfg); seen["u1"] != 1 || len(claims) != 1 || claims[0] != "key-of-u" {
		t.Fatalf("events of u1: %d, claims: %v", seen["u1"], claims)
	}
}

// session joins a group of its own and hands its session to w.
func session(t *testing.T, cfg topology.Config, w *adapters.TxnEventLog) {
	t.Helper()
	w.Group = cfg.EventsTopic + ".group"
	m := join(t, cfg, w.Group)
	t.Cleanup(m.leave)
	w.Assigned(m.next(t))
}

// Appends that arrive while a transaction runs share the next one (group
// commit): 200 concurrent appends to one partition all succeed, each is in
// the log once, and far fewer than 200 transactions were needed (each
// transaction leaves one commit marker in the partition).
func TestConcurrentAppendsShareTransactions(t *testing.T) {
	cfg := testKafka(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := &adapters.TxnEventLog{Config: cfg, ClientID: "batch", TxnPrefix: cfg.EventsTopic, Source: "/test/batch", Log: log}
	defer w.Close()
	session(t, cfg, w)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := fmt.Sprintf("u%03d", i)
			e := events.New(uid+"-e1", events.Profile{}, uid, events.ProfileCreated{Username: uid, Email: uid + "@mail.com"}, time.Now())
			errs <- w.Append(context.Background(), nil, e)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("append: %v", err)
		}
	}

	seen, end := keysInLog(t, cfg)
	for i := range n {
		if uid := fmt.Sprintf("u%03d", i); seen[uid] != 1 {
			t.Errorf("%s is in the log %d times", uid, seen[uid])
		}
	}
	txns := end - n
	t.Logf("%d appends in %d transactions", n, txns)
	if txns >= n/2 {
		t.Errorf("%d appends took %d transactions; concurrent appends should share them", n, txns)
	}
}

// An append that gave up before its transaction began to commit is never
// written, even when it shared the transaction with appends that went on:
// with an append timeout shorter than a transaction, every 200 appends of
// this test end as written (nil), not written (ErrAppendTimeout), or
// unknown (the commit had begun), and the log agrees with the first two.
//
// With StuckAfter shorter than a transaction, the producer is replaced
// (as one that a deposed leader holds would), by the append that gives up
// or by the transaction's own watchdog when none does:
// the new producer fences the old one and aborts its transaction, whose
// appends that had not given up yet are told ErrNotWriter (not written).
// The log agrees with those outcomes too, and appends go on afterwards.
func TestAppendsThatGaveUpAreNotWritten(t *testing.T) {
	for _, tc := range []struct {
		name          string
		appendTimeout time.Duration
		stuckAfter    time.Duration
	}{
		{"the producer kept", 40 * time.Millisecond, time.Hour},
		// 5 ms is shorter than any transaction: many appends give up.
		{"the producer replaced", 5 * time.Millisecond, time.Nanosecond},
		// No append gives up in 5 s: the transactions' watchdog replaces.
		{"the producer replaced with no append giving up", 5 * time.Second, time.Nanosecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testKafka(t)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			w := &adapters.TxnEventLog{Config: cfg, ClientID: "withdraw", TxnPrefix: cfg.EventsTopic, Source: "/test/withdraw", Log: log,
				AppendTimeout: tc.appendTimeout, StuckAfter: tc.stuckAfter}
			defer w.Close()
			session(t, cfg, w)
			replaced0 := counter(t, "profiles_command_producers_replaced_total")

			const n = 200
			outcome := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(time.Duration(i%20) * time.Millisecond) // spread them over several transactions
					uid := fmt.Sprintf("w%03d", i)
					e := events.New(uid+"-e1", events.Profile{}, uid, events.ProfileCreated{Username: uid, Email: uid + "@mail.com"}, time.Now())
					outcome[i] = w.Append(context.Background(), nil, e)
				}()
			}
			wg.Wait()
			replaced := func() float64 { return counter(t, "profiles_command_producers_replaced_total") - replaced0 }
			if tc.stuckAfter < time.Millisecond {
				// The log still takes appends, on the last producer, once
				// they may take as long as a transaction does.
				w.AppendTimeout, w.StuckAfter = 5*time.Second, time.Hour
				var err error
				for try := 0; try < 50; try++ {
					e := events.New("after-e1", events.Profile{}, "after", events.ProfileCreated{Username: "after", Email: "after@mail.com"}, time.Now())
					if err = w.Append(context.Background(), nil, e); err == nil || !errors.Is(err, adapters.ErrNotWriter) && !errors.Is(err, adapters.ErrAppendTimeout) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err != nil {
					t.Errorf("no append succeeded after the replacements: %v", err)
				}
				// A replacement starts its producer in the background.
				for deadline := time.Now().Add(10 * time.Second); replaced() == 0 && time.Now().Before(deadline); {
					time.Sleep(50 * time.Millisecond)
				}
				if replaced() == 0 {
					t.Error("no producer was replaced, though every transaction outlived StuckAfter")
				}
			} else if replaced() != 0 {
				t.Errorf("%v producers replaced with StuckAfter %s", replaced(), tc.stuckAfter)
			}
			w.Close()

			seen, _ := keysInLog(t, cfg)
			written, notWritten, unknown := 0, 0, 0
			for i, err := range outcome {
				uid := fmt.Sprintf("w%03d", i)
				switch {
				case err == nil:
					written++
					if seen[uid] != 1 {
						t.Errorf("%s was acknowledged but is in the log %d times", uid, seen[uid])
					}
				case errors.Is(err, adapters.ErrOutcomeUnknown):
					unknown++
					if seen[uid] > 1 {
						t.Errorf("%s is in the log %d times", uid, seen[uid])
					}
				case errors.Is(err, adapters.ErrAppendTimeout), errors.Is(err, adapters.ErrNotWriter):
					notWritten++
					if seen[uid] != 0 {
						t.Errorf("%s was answered %q but is in the log", uid, err)
					}
				default:
					t.Errorf("%s: %v", uid, err)
				}
			}
			t.Logf("%d written, %d not written, %d unknown; %v producers replaced", written, notWritten, unknown, replaced())
		})
	}
}

// A transaction that a broker holds is given up even when the first
// producer started to replace it cannot start (a coordinator that its
// broker still believes it is answers CONCURRENT_TRANSACTIONS until the
// replacement's retries run out): the replacement is tried again every
// second while the transaction is stuck, without waiting for an append
// to give up.
func TestAStuckProducerIsReplacedWhenTheFirstReplacementFails(t *testing.T) {
	cfg := testKafka(t)
	release := make(chan struct{})
	var calls atomic.Int32
	w := &adapters.TxnEventLog{Config: cfg, ClientID: "retry-replace", TxnPrefix: cfg.EventsTopic, Source: "/test/retry-replace",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AppendTimeout: time.Minute, StuckAfter: 300 * time.Millisecond,
		NewProducer: func(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error) {
			switch calls.Add(1) {
			case 1: // the session's producer: its first transaction is held
				p, err := sarama.NewSyncProducer(seeds, conf)
				if err != nil {
					return nil, err
				}
				return heldProducer{p, release}, nil
			case 2: // the first replacement
				return nil, sarama.ErrConcurrentTransactions
			default:
				return sarama.NewSyncProducer(seeds, conf)
			}
		}}
	defer w.Close()
	defer close(release)
	session(t, cfg, w)
	replaced0 := counter(t, "profiles_command_producers_replaced_total")

	held := make(chan error, 1)
	go func() {
		e := events.New("held-e1", events.Profile{}, "held", events.ProfileCreated{Username: "held", Email: "held@mail.com"}, time.Now())
		held <- w.Append(context.Background(), nil, e)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, "profiles_command_producers_replaced_total") == replaced0 {
		if time.Now().After(deadline) {
			t.Fatalf("the held transaction's producer was not replaced in 10 s (%d producers started); its append waits for its minute", calls.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := calls.Load(); n < 3 {
		t.Fatalf("replaced after %d producer starts, want the failed one and another", n)
	}
	// The replacement takes the appends: one goes through while the first
	// transaction is still held.
	var err error
	for try := 0; try < 50; try++ {
		e := events.New("after-e1", events.Profile{}, "after", events.ProfileCreated{Username: "after", Email: "after@mail.com"}, time.Now())
		if err = w.Append(context.Background(), nil, e); err == nil || !errors.Is(err, adapters.ErrNotWriter) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("an append to the replacement: %v", err)
	}
	select {
	case err := <-held:
		t.Fatalf("the held append returned while its transaction was held: %v", err)
	default:
	}
}

// heldProducer holds SendMessages until release is closed, as a broker
// that holds a produce request would.
type heldProducer struct {
	sarama.SyncProducer
	release chan struct{}
}

func (h heldProducer) SendMessages(msgs []*sarama.ProducerMessage) error {
	<-h.release
	return h.SyncProducer.SendMessages(msgs)
}

// counter returns the value of a counter of the default Prometheus
// registry (0 if it has not been registered yet).
func counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// keysInLog reads the committed records of the one-partition event log,
// and returns how often each key occurs, and the partition's end offset
// (records plus transaction markers).
func keysInLog(t *testing.T, cfg topology.Config) (map[string]int, int64) {
	t.Helper()
	client, err := topology.Connect(context.Background(), cfg, "txnlog-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	end, err := client.GetOffset(cfg.EventsTopic, 0, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	err = kafkax.Read(context.Background(), client, kafkax.ReadOptions{
		Topic: cfg.EventsTopic, Partitions: []int32{0}, StopAtEnd: true,
		Start: func(int32) (int64, error) { return sarama.OffsetOldest, nil },
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			for _, r := range recs {
				seen[string(r.Key)]++
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return seen, end
}

// A transaction that runs for a second or more is logged at WARN with the
// time each of its steps took (kafkax.TxnSteps), so that a slow append tells where it
// waited: here the commit, which a producer holds for 1.2 s.
func TestASlowTransactionIsLoggedWithItsSteps(t *testing.T) {
	cfg := testKafka(t)
	var logged bytes.Buffer
	var mu sync.Mutex
	w := &adapters.TxnEventLog{Config: cfg, ClientID: "slow-commit", TxnPrefix: cfg.EventsTopic, Source: "/test/slow-commit",
		Log: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logged}, nil)), AppendTimeout: 10 * time.Second,
		NewProducer: func(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error) {
			p, err := sarama.NewSyncProducer(seeds, conf)
			if err != nil {
				return nil, err
			}
			return slowCommitProducer{p, 1200 * time.Millisecond}, nil
		}}
	defer w.Close()
	session(t, cfg, w)
	e := events.New("slow-e1", events.Profile{}, "slow", events.ProfileCreated{Username: "slow", Email: "slow@mail.com"}, time.Now())
	if err := w.Append(context.Background(), nil, e); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Msg   string `json:"msg"`
		Steps string `json:"steps"`
		Took  int64  `json:"took"`
	}
	// The line is written once the transaction's goroutine has answered
	// the append, so it may come a moment after Append returns.
	for deadline := time.Now().Add(5 * time.Second); rec.Msg == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		for _, line := range bytes.Split(logged.Bytes(), []byte("\n")) {
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "a transaction was slow" {
				break
			}
			rec.Msg = ""
		}
		mu.Unlock()
	}
	if rec.Msg == "" {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no line for the slow transaction in:\n%s", logged.String())
	}
	// "checks 0s, begin 0s, send 3ms, offsets 5ms, commit 1.204s"
	commit := regexp.MustCompile(`commit (\d+(\.\d+)?)s$`).FindStringSubmatch(rec.Steps)
	if !strings.HasPrefix(rec.Steps, "checks ") || commit == nil || time.Duration(rec.Took) < 1200*time.Millisecond {
		t.Fatalf("steps %q, took %s; want them in order, ending with a commit of 1.2 s or more", rec.Steps, time.Duration(rec.Took))
	}
	if secs, _ := strconv.ParseFloat(commit[1], 64); secs < 1.2 {
		t.Fatalf("commit took %ss in %q; want 1.2 s or more", commit[1], rec.Steps)
	}
	t.Logf("logged: took %s: %s", time.Duration(rec.Took).Round(time.Millisecond), rec.Steps)
}

// slowCommitProducer holds each commit for delay before sending it.
type slowCommitProducer struct {
	sarama.SyncProducer
	delay time.Duration
}

func (p slowCommitProducer) CommitTxn() error {
	time.Sleep(p.delay)
	return p.SyncProducer.CommitTxn()
}

// lockedWriter is an io.Writer that many goroutines may share.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
