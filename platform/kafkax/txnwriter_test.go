package kafkax

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// A producer is replaced when it is fenced, in a fatal state, or stuck in a
// state from which its state machine refuses the next step; a transient
// failure keeps it.
func TestUnusableProducer(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		st   sarama.ProducerTxnStatusFlag
		want bool
	}{
		{"fenced", sarama.ErrProducerFenced, sarama.ProducerTxnFlagReady, true},
		{"expelled from the group", fmt.Errorf("add offsets: %w", sarama.ErrUnknownMemberId), sarama.ProducerTxnFlagReady, true},
		{"fatal state", errors.New("broken"), sarama.ProducerTxnFlagInError | sarama.ProducerTxnFlagFatalError, true},
		{"stuck state machine", fmt.Errorf("cannot abort an earlier transaction: %w", sarama.ErrTransitionNotAllowed),
			sarama.ProducerTxnFlagEndTransaction | sarama.ProducerTxnFlagCommittingTransaction, true},
		{"a broker down", sarama.ErrOutOfBrokers, sarama.ProducerTxnFlagInError | sarama.ProducerTxnFlagAbortableError, false},
		{"coordinator moving", sarama.ErrNotCoordinatorForConsumer, sarama.ProducerTxnFlagReady, false},
	} {
		if got := Unusable(tc.err, tc.st); got != tc.want {
			t.Errorf("%s: Unusable = %t, want %t", tc.name, got, tc.want)
		}
	}
}

// fakeTxnProducer is a transactional producer that records its
// transactions. hold, if set, is waited on by its SendMessages (or, with
// holdCommit, its CommitTxn): a broker that holds a request. gate, if
// set, is waited on before its start returns: an InitProducerId that the
// coordinator answers CONCURRENT_TRANSACTIONS for a while.
type fakeTxnProducer struct {
	sarama.SyncProducer // nil: a call the writer must not make panics
	name                string
	hold                chan struct{}
	holdCommit          bool
	sendErr             error
	gate                chan struct{}

	mu        sync.Mutex
	status    sarama.ProducerTxnStatusFlag
	sent      []string
	committed [][]string
	closed    bool
}

func (f *fakeTxnProducer) TxnStatus() sarama.ProducerTxnStatusFlag {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeTxnProducer) BeginTxn() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.sent = sarama.ProducerTxnFlagInTransaction, nil
	return nil
}

func (f *fakeTxnProducer) SendMessages(msgs []*sarama.ProducerMessage) error {
	if f.hold != nil && !f.holdCommit {
		<-f.hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		f.status = sarama.ProducerTxnFlagInError | sarama.ProducerTxnFlagFatalError
		return f.sendErr
	}
	for i, m := range msgs {
		v, _ := m.Value.Encode()
		f.sent = append(f.sent, string(v))
		m.Partition, m.Offset = 0, int64(100+i)
	}
	return nil
}

func (f *fakeTxnProducer) CommitTxn() error {
	if f.hold != nil && f.holdCommit {
		<-f.hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.committed = append(f.committed, f.sent)
	f.status = sarama.ProducerTxnFlagReady
	return nil
}

func (f *fakeTxnProducer) AbortTxn() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = sarama.ProducerTxnFlagReady
	return nil
}

func (f *fakeTxnProducer) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeTxnProducer) state() (committed [][]string, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed, f.closed
}

// fakeProducers hands out the producers of a test in order, and records
// when each was started.
type fakeProducers struct {
	mu      sync.Mutex
	next    []*fakeTxnProducer
	started []string
}

func (p *fakeProducers) new(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error) {
	p.mu.Lock()
	if len(p.next) == 0 {
		p.mu.Unlock()
		return nil, errors.New("no more producers")
	}
	f := p.next[0]
	p.next = p.next[1:]
	p.started = append(p.started, f.name)
	p.mu.Unlock()
	if f.gate != nil {
		<-f.gate
	}
	return f, nil
}

func (p *fakeProducers) startedSoFar() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.started)
}

func msg(v string) *sarama.ProducerMessage {
	return &sarama.ProducerMessage{Topic: "t", Value: sarama.StringEncoder(v)}
}

// newTestWriter returns a writer over producers, with a StuckAfter short
// enough for a test, and no brokers to vote on a bootstrap list (the
// replacement falls back to the configured ones).
func newTestWriter(t *testing.T, producers ...*fakeTxnProducer) (*TxnWriter, *fakeProducers) {
	t.Helper()
	fp := &fakeProducers{next: producers}
	c := Config{Brokers: []string{"127.0.0.1:1"}}
	w := NewTxnWriter(TxnWriterOptions{Brokers: c.Brokers, Producer: func() *sarama.Config { return c.ProducerSarama("test") }, TransactionalID: "test-txn",
		StuckAfter: 100 * time.Millisecond, Topic: "t", NewProducer: fp.new})
	t.Cleanup(func() { _ = w.Close() })
	return w, fp
}

// A write is committed in a transaction, and the caller's messages get the
// offsets sarama gave the copies it sent.
func TestTxnWriterCommitsAndReportsOffsets(t *testing.T) {
	p := &fakeTxnProducer{name: "first"}
	w, _ := newTestWriter(t, p)
	msgs := []*sarama.ProducerMessage{msg("a"), msg("b")}
	if err := w.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
	if committed, _ := p.state(); fmt.Sprint(committed) != "[[a b]]" {
		t.Errorf("committed %v, want [[a b]]", committed)
	}
	if msgs[0].Offset != 100 || msgs[1].Offset != 101 {
		t.Errorf("offsets %d, %d; want 100, 101", msgs[0].Offset, msgs[1].Offset)
	}
}

// A transaction held past StuckAfter is given up: a new producer starts
// (which, on Kafka, fences the old one) before the write is answered
// ErrWriterReplaced, and the next write goes to the new producer. The old
// one is closed once its call returns.
func TestTxnWriterReplacesAProducerWhoseTransactionIsHeld(t *testing.T) {
	hold := make(chan struct{})
	old, replacement := &fakeTxnProducer{name: "old", hold: hold}, &fakeTxnProducer{name: "replacement"}
	w, fp := newTestWriter(t, old, replacement)
	began := time.Now()
	err := w.SendMessages([]*sarama.ProducerMessage{msg("held")})
	if !errors.Is(err, ErrWriterReplaced) {
		t.Fatalf("a held write returned %v, want ErrWriterReplaced", err)
	}
	if took := time.Since(began); took < 100*time.Millisecond || took > 5*time.Second {
		t.Errorf("the held write was given up after %v, want StuckAfter (100 ms)", took)
	}
	if got := fp.startedSoFar(); fmt.Sprint(got) != "[old replacement]" {
		t.Fatalf("producers started %v before the answer, want [old replacement]", got)
	}
	if err := w.SendMessages([]*sarama.ProducerMessage{msg("again")}); err != nil {
		t.Fatal(err)
	}
	if committed, _ := replacement.state(); fmt.Sprint(committed) != "[[again]]" {
		t.Errorf("the replacement committed %v, want [[again]]", committed)
	}
	close(hold)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, closed := old.state(); closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replaced producer was not closed after its call returned")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A transaction held during its commit may have committed: its write is
// answered ErrCommitUnknown, not ErrWriterReplaced.
func TestTxnWriterHeldDuringTheCommitIsUnknown(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	w, _ := newTestWriter(t, &fakeTxnProducer{name: "old", hold: hold, holdCommit: true}, &fakeTxnProducer{name: "replacement"})
	if err := w.SendMessages([]*sarama.ProducerMessage{msg("held")}); !errors.Is(err, ErrCommitUnknown) {
		t.Fatalf("a write held in its commit returned %v, want ErrCommitUnknown", err)
	}
}

// A producer that fails for good is dropped, and the next write starts a
// new one.
func TestTxnWriterStartsANewProducerAfterAFatalError(t *testing.T) {
	broken := &fakeTxnProducer{name: "broken", sendErr: sarama.ErrProducerFenced}
	next := &fakeTxnProducer{name: "next"}
	w, fp := newTestWriter(t, broken, next)
	if err := w.SendMessages([]*sarama.ProducerMessage{msg("x")}); !errors.Is(err, sarama.ErrProducerFenced) {
		t.Fatalf("got %v, want the fencing error", err)
	}
	if err := w.SendMessages([]*sarama.ProducerMessage{msg("y")}); err != nil {
		t.Fatal(err)
	}
	if got := fp.startedSoFar(); fmt.Sprint(got) != "[broken next]" {
		t.Errorf("producers started %v, want [broken next]", got)
	}
	if committed, _ := next.state(); fmt.Sprint(committed) != "[[y]]" {
		t.Errorf("committed %v, want [[y]]", committed)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.SendMessages([]*sarama.ProducerMessage{msg("z")}); !errors.Is(err, ErrWriterClosed) {
		t.Errorf("a write after Close returned %v, want ErrWriterClosed", err)
	}
}

// A write that waits for a producer whose transaction then fails for good
// fails too (it was never sent), instead of waiting for a loop that has
// ended; the write after it starts a new producer.
func TestTxnWriterReleasesTheWritesWaitingForAProducerThatFailed(t *testing.T) {
	hold := make(chan struct{})
	broken := &fakeTxnProducer{name: "broken", hold: hold, sendErr: sarama.ErrProducerFenced}
	next := &fakeTxnProducer{name: "next"}
	fp := &fakeProducers{next: []*fakeTxnProducer{broken, next}}
	c := Config{Brokers: []string{"127.0.0.1:1"}}
	w := NewTxnWriter(TxnWriterOptions{Brokers: c.Brokers, Producer: func() *sarama.Config { return c.ProducerSarama("test") },
		TransactionalID: "test-txn", StuckAfter: time.Hour, NewProducer: fp.new})
	defer w.Close()
	first := make(chan error, 1)
	go func() { first <- w.SendMessages([]*sarama.ProducerMessage{msg("held")}) }()
	time.Sleep(50 * time.Millisecond) // "held" is in the transaction
	waiting := make(chan error, 1)
	go func() { waiting <- w.SendMessages([]*sarama.ProducerMessage{msg("waiting")}) }()
	time.Sleep(50 * time.Millisecond) // "waiting" waits for the loop
	close(hold)
	if err := <-first; !errors.Is(err, sarama.ErrProducerFenced) {
		t.Fatalf("the held write returned %v, want the fencing error", err)
	}
	select {
	case err := <-waiting:
		if err != nil && !errors.Is(err, ErrWriterReplaced) {
			t.Fatalf("the waiting write returned %v, want nil or ErrWriterReplaced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting write still waits for the producer that failed")
	}
	if err := w.SendMessages([]*sarama.ProducerMessage{msg("after")}); err != nil {
		t.Fatal(err)
	}
}

// A producer that fails for good while its replacement is starting is
// replaced once: the write after the failure waits for the replacement
// and is written by it. A write that started a producer of its own
// meanwhile would have it fenced by the replacement's InitProducerId (or
// fence the replacement), and its transaction with it.
func TestTxnWriterWaitsForTheReplacementOfAProducerThatFailed(t *testing.T) {
	hold, gate := make(chan struct{}), make(chan struct{})
	old := &fakeTxnProducer{name: "old", hold: hold, sendErr: sarama.ErrProducerFenced}
	replacement := &fakeTxnProducer{name: "replacement", gate: gate}
	w, fp := newTestWriter(t, old, replacement, &fakeTxnProducer{name: "another"})
	first := make(chan error, 1)
	go func() { first <- w.SendMessages([]*sarama.ProducerMessage{msg("held")}) }()
	for deadline := time.Now().Add(5 * time.Second); len(fp.startedSoFar()) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("producers started %v; the held transaction was not replaced", fp.startedSoFar())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(hold) // the old producer fails for good while its replacement starts
	if err := <-first; err == nil {
		t.Fatal("the held write succeeded")
	}
	after := make(chan error, 1)
	go func() { after <- w.SendMessages([]*sarama.ProducerMessage{msg("after")}) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-after:
		t.Fatalf("the write after the failure returned %v before the replacement had started", err)
	default:
	}
	close(gate)
	select {
	case err := <-after:
		if err != nil {
			t.Fatalf("the write after the failure returned %v, want it written by the replacement", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write after the failure still waits once the replacement has started")
	}
	if got := fp.startedSoFar(); fmt.Sprint(got) != "[old replacement]" {
		t.Errorf("producers started %v, want [old replacement]", got)
	}
	if committed, _ := replacement.state(); fmt.Sprint(committed) != "[[after]]" {
		t.Errorf("the replacement committed %v, want [[after]]", committed)
	}
}
