package kafkax

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ErrWriterReplaced is the error of a TxnWriter write that was not
// written: its transaction ran for StuckAfter and its producer was
// replaced by one that fenced it, or its producer failed for good before
// the write was sent. No read_committed reader will ever read any of its
// records; writing them again is safe.
var ErrWriterReplaced = errors.New("kafkax: the write's producer was replaced (its transaction ran too long) or failed before the write was sent; nothing of it will be read")

// ErrCommitUnknown is the error of a TxnWriter write whose transaction ran
// for StuckAfter after its commit had begun: it may have committed or not.
var ErrCommitUnknown = errors.New("kafkax: the transaction ran too long during its commit, whose outcome is not known")

// ErrWriterClosed is the error of a write to a closed TxnWriter.
var ErrWriterClosed = errors.New("kafkax: the transactional writer is closed")

// DefaultStuckAfter is TxnWriterOptions.StuckAfter's default.
const DefaultStuckAfter = 5 * time.Second

// maxTxnRecords bounds the records of one transaction of a TxnWriter.
const maxTxnRecords = 4000

// TxnWriterOptions configures NewTxnWriter.
type TxnWriterOptions struct {
	// Brokers bootstrap the first producer, and are asked which brokers
	// are live when one is replaced.
	Brokers []string
	// Producer returns the configuration of a producer, such as
	// Config.ProducerSarama or topology.Config.ProducerSarama (whose
	// partitioner places the profiles topics' keys). The writer sets its
	// transactional id and timeout.
	Producer func() *sarama.Config
	// TransactionalID is the producers' transactional.id. A producer that
	// starts with it fences every earlier one (a replaced producer, or the
	// previous process of this instance), so it must be this instance's
	// alone and the same across its restarts.
	TransactionalID string
	// TxnTimeout is the producers' transaction.timeout.ms: how long a
	// transaction left open by a frozen process holds back the
	// read_committed readers of its partitions before the coordinator
	// aborts it. 0 means 10 s.
	TxnTimeout time.Duration
	// StuckAfter is how long a transaction may run before its producer is
	// replaced (0 means DefaultStuckAfter). A healthy transaction takes
	// milliseconds; one that runs this long waits on a broker that holds
	// its requests (frozen, or a leader deposed without knowing it), and
	// sarama bounds those only by the connection's read timeout.
	StuckAfter time.Duration
	// Linger is how long a transaction waits, after the first write
	// arrives, for more writes to share it (0: none; it takes those that
	// queued while the previous one ran). A transaction costs the broker
	// several requests and a marker on every partition it wrote, whatever
	// its size.
	Linger time.Duration
	// Topic is the topic whose metadata the brokers are asked for when they
	// vote on the replacement's bootstrap list (see ReplacementSeeds).
	Topic string
	Log   *slog.Logger
	// NewProducer, if set, replaces NewSyncProducer (tests). A producer
	// that is not a SyncProducer is replaced only when its transaction has
	// run for StuckAfter (see WatchStale).
	NewProducer func(seeds []string, conf *sarama.Config) (sarama.SyncProducer, error)
}

// TxnWriter writes batches of records, each batch all or none, in
// transactions of one transactional producer. Calls that arrive while a
// transaction runs share the next one: one transaction per round, however
// many callers (group commit).
//
// A transaction that runs for StuckAfter is given up: a new producer is
// started, bootstrapped from the brokers that every answering broker lists
// (ReplacementSeeds, which leaves out a frozen or deposed one, waiting up
// to StuckAfter for the controller to fence it), and its
// InitProducerId fences the old producer, whose transaction can then never
// commit. Only after that are the writes of the old transaction answered
// ErrWriterReplaced, so a caller that writes them again can never have
// them overtaken by the old ones: this is what makes giving up safe for a
// writer whose later records must stay later, which an idempotent producer
// alone cannot promise once its request is abandoned.
//
// Every method may be called concurrently. The zero value is not usable:
// use NewTxnWriter.
type TxnWriter struct {
	opts TxnWriterOptions

	mu sync.Mutex // held while a producer starts
	// cur is the loop that writes take: nil until the first write, after
	// a fatal error, or once closed. A loop whose producer failed while a
	// replacement of it was starting stays cur until the replacement is
	// in (or gave up), so that no write starts a second producer
	// meanwhile: the InitProducerId of whichever started last would fence
	// the other, and the transaction it runs.
	cur    *txnLoop
	closed bool
	// swapped is closed, and made anew, whenever a replacement ends
	// (replace), so that writes waiting for it take the new loop.
	swapped chan struct{}
}

// NewTxnWriter returns a writer. Its first producer starts at the first
// write, so that a coordinator not available yet fails writes (which the
// caller retries) and not the start of the process.
func NewTxnWriter(opts TxnWriterOptions) *TxnWriter {
	opts.StuckAfter = cmp.Or(opts.StuckAfter, DefaultStuckAfter)
	opts.TxnTimeout = cmp.Or(opts.TxnTimeout, 10*time.Second)
	if opts.NewProducer == nil {
		opts.NewProducer = NewSyncProducer
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &TxnWriter{opts: opts, swapped: make(chan struct{})}
}

func (w *TxnWriter) producerConfig() *sarama.Config {
	sc := w.opts.Producer()
	sc.Producer.Transaction.ID = w.opts.TransactionalID
	sc.Producer.Transaction.Timeout = w.opts.TxnTimeout
	return sc
}

// SendMessages writes msgs in one transaction, with the writes of other
// callers that arrive meanwhile, and returns once it is committed (each
// message then has its Offset and Partition set) or has failed. A write
// that failed with ErrWriterReplaced was not written; after any other
// error it may have been.
// msgs are not touched until the commit; sarama works on copies.
func (w *TxnWriter) SendMessages(msgs []*sarama.ProducerMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	copies := make([]*sarama.ProducerMessage, len(msgs))
	for i, m := range msgs {
		c := *m
		copies[i] = &c
	}
	r := &txnWrite{msgs: copies, done: make(chan error, 1)}
	if err := w.enqueue(r); err != nil {
		return err
	}
	if err := <-r.done; err != nil {
		return err
	}
	for i, m := range msgs {
		m.Offset, m.Partition, m.Timestamp = copies[i].Offset, copies[i].Partition, copies[i].Timestamp
	}
	return nil
}

// enqueue hands r to the current loop. A loop that has stopped is taken
// again once it is no longer current: if it is still current, a
// replacement of its producer is starting, and r waits for it (at most
// StuckAfter) instead of failing at once.
func (w *TxnWriter) enqueue(r *txnWrite) error {
	for range 3 {
		l, err := w.loop()
		if err != nil {
			return err
		}
		select {
		case l.reqs <- r:
			return nil
		case <-l.stop:
		}
		w.mu.Lock()
		replacing, swapped := w.cur == l, w.swapped
		w.mu.Unlock()
		if replacing {
			select {
			case <-swapped:
			case <-time.After(w.opts.StuckAfter):
				return ErrWriterReplaced
			}
		}
	}
	return ErrWriterReplaced
}

// loop returns the loop of the current producer, starting one if there is
// none.
func (w *TxnWriter) loop() (*txnLoop, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrWriterClosed
	}
	if w.cur != nil {
		return w.cur, nil
	}
	prod, err := w.opts.NewProducer(w.opts.Brokers, w.producerConfig())
	if err != nil {
		return nil, fmt.Errorf("start the transactional producer %s: %w", w.opts.TransactionalID, err)
	}
	w.cur = newTxnLoop(w, prod)
	return w.cur, nil
}

// Close stops the current producer once its transaction in flight, if
// any, is over, and waits for that at most StuckAfter. Writes fail with
// ErrWriterClosed from now on.
func (w *TxnWriter) Close() error {
	w.mu.Lock()
	w.closed = true
	l := w.cur
	w.cur = nil
	w.mu.Unlock()
	if l == nil {
		return nil
	}
	l.closeWhenIdle()
	select {
	case <-l.stopped:
		return nil
	case <-time.After(w.opts.StuckAfter):
		return fmt.Errorf("the transactional producer %s is still closing: a broker holds its requests", w.opts.TransactionalID)
	}
}

// replace gives up l's transaction in flight (see TxnWriter). It runs in
// the watchdog's goroutine; it tries again every second while l's
// transaction still runs and no producer could be started.
func (w *TxnWriter) replace(l *txnLoop, began time.Time, why string, attrs ...any) {
	defer func() {
		w.mu.Lock()
		close(w.swapped)
		w.swapped = make(chan struct{})
		w.mu.Unlock()
	}()
	for {
		seeds := ReplacementSeeds(w.producerConfig(), w.opts.Brokers, w.opts.Topic, w.opts.StuckAfter)
		ran := time.Since(began).Round(time.Millisecond)
		w.opts.Log.Warn(why, append([]any{"transactional_id", w.opts.TransactionalID, "ran", ran, "seeds", seeds}, attrs...)...)
		prod, err := w.opts.NewProducer(seeds, w.producerConfig())
		if err == nil {
			w.mu.Lock()
			current := w.cur == l && !w.closed
			if current {
				w.cur = newTxnLoop(w, prod)
			}
			w.mu.Unlock()
			if !current { // closed, or a fatal error detached l meanwhile
				_ = prod.Close()
				return
			}
			txnWritersReplaced.Inc()
			l.closeWhenIdle()
			// prod's InitProducerId has fenced l's producer: a transaction
			// whose commit had not begun by now can never commit.
			batch, committing := l.inFlight()
			for _, r := range batch {
				if committing {
					r.answer(ErrCommitUnknown)
				} else {
					r.answer(ErrWriterReplaced)
				}
			}
			return
		}
		w.opts.Log.Error("cannot start a producer to replace a stuck one; trying again in 1 s", "transactional_id", w.opts.TransactionalID, "err", err)
		time.Sleep(time.Second)
		if batch, _ := l.inFlight(); batch == nil {
			w.mu.Lock()
			l.replacing.Store(false) // the next transaction's watchdog may try again
			if l.failed && w.cur == l {
				w.cur = nil // its producer failed for good: the next write starts one
			}
			w.mu.Unlock()
			return
		}
	}
}

var txnWriterBatch = promauto.NewHistogram(prometheus.HistogramOpts{
	Name:    "profiles_txn_writer_batch_writes",
	Help:    "Writes (SendMessages calls) per transaction of a TxnWriter (the projector's: one per partition batch).",
	Buckets: []float64{1, 2, 3, 4, 6, 8, 12, 16, 32},
})

var txnWritersReplaced = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_txn_writer_producers_replaced_total",
	Help: "Transactional producers of a TxnWriter (the projector's) replaced because a transaction ran for StuckAfter, or waited on a broker that the cluster had fenced (a broker held its requests).",
})

// txnWrite is one SendMessages call waiting for, or in, a transaction.
type txnWrite struct {
	msgs     []*sarama.ProducerMessage
	done     chan error // buffered: gets the outcome once
	answered atomic.Bool
}

func (r *txnWrite) answer(err error) {
	if r.answered.CompareAndSwap(false, true) {
		r.done <- err
	}
}

// txnLoop is one producer of a TxnWriter and the goroutine (run) that runs
// its transactions, one at a time.
type txnLoop struct {
	w    *TxnWriter
	prod sarama.SyncProducer

	reqs      chan *txnWrite
	stop      chan struct{} // closed by closeWhenIdle
	stopped   chan struct{} // closed once run has returned and prod is closed
	once      sync.Once
	replacing atomic.Bool
	// failed is set, under w.mu, once the producer failed for good.
	failed bool
	// committing is set once the transaction in flight asked to commit.
	committing atomic.Bool

	mu    sync.Mutex
	txn   []*txnWrite // the writes of the transaction in flight
	began time.Time   // when it began
}

func newTxnLoop(w *TxnWriter, prod sarama.SyncProducer) *txnLoop {
	l := &txnLoop{w: w, prod: prod, reqs: make(chan *txnWrite), stop: make(chan struct{}), stopped: make(chan struct{})}
	go l.run()
	return l
}

func (l *txnLoop) closeWhenIdle() { l.once.Do(func() { close(l.stop) }) }

// inFlight returns the writes of the transaction in flight (nil if none),
// and whether it had asked to commit.
func (l *txnLoop) inFlight() (batch []*txnWrite, committing bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.txn, l.committing.Load()
}

// run takes the writes in arrival order and runs them in transactions: the
// first that arrives, those that arrive within Linger of it, and all that
// are queued when it starts, up to maxTxnRecords records.
func (l *txnLoop) run() {
	defer func() {
		// Writes that took this loop and wait to be taken fail (they were
		// never sent) instead of waiting for a loop that has ended.
		l.closeWhenIdle()
		_ = l.prod.Close()
		close(l.stopped)
	}()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		var batch []*txnWrite
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.stop:
			return
		}
		batch = Gather(batch, len(batch[0].msgs), l.reqs, l.stop, l.w.opts.Linger, linger, func(r *txnWrite) int { return len(r.msgs) }, maxTxnRecords)
		txnWriterBatch.Observe(float64(len(batch)))
		if l.transact(batch) {
			return
		}
	}
}

// transact runs one transaction of batch and answers its writes. It
// reports whether the producer can never write again.
func (l *txnLoop) transact(batch []*txnWrite) (fatal bool) {
	began := time.Now()
	l.mu.Lock()
	l.txn, l.began = batch, began
	l.committing.Store(false)
	l.mu.Unlock()
	// A replacement begins only while this transaction is in flight:
	// once it is over (below), no watchdog begins one.
	begin := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.txn != nil && l.began.Equal(began) && l.replacing.CompareAndSwap(false, true)
	}
	watchdog := time.AfterFunc(l.w.opts.StuckAfter, func() {
		if begin() {
			l.w.replace(l, began, "a transaction has run too long; replacing the producer, which aborts it")
		}
	})
	stale := WatchStale(l.prod, StaleOptions{Seeds: l.w.opts.Brokers, Conf: l.w.producerConfig, Topic: l.w.opts.Topic}, func(fenced []string) {
		if begin() {
			l.w.replace(l, began, "a transaction waits on a broker that the cluster has fenced; replacing the producer, which aborts it", "fenced", fenced)
		}
	})
	defer func() {
		watchdog.Stop()
		stale()
	}()
	var msgs []*sarama.ProducerMessage
	for _, r := range batch {
		msgs = append(msgs, r.msgs...)
	}
	steps := StartTxnSteps()
	err := l.commit(msgs, &steps)
	l.mu.Lock()
	l.txn = nil
	l.mu.Unlock()
	steps.LogIfSlow(l.w.opts.Log, "transactional_id", l.w.opts.TransactionalID, "writes", len(batch), "records", len(msgs))
	for _, r := range batch {
		r.answer(err)
	}
	if err == nil || !Unusable(err, l.prod.TxnStatus()) {
		return false
	}
	// No replacement begins from now on (begin): one that began is
	// starting, and the next write waits for it (enqueue).
	l.w.mu.Lock()
	l.failed = true
	current := l.w.cur == l
	if current && !l.replacing.Load() {
		l.w.cur = nil
	}
	l.w.mu.Unlock()
	if current { // a replaced producer is fenced by its replacement: no news
		l.w.opts.Log.Warn("the transactional producer is fenced or failed for good; the next write starts a new one",
			"transactional_id", l.w.opts.TransactionalID, "status", l.prod.TxnStatus().String(), "err", err)
	}
	return true
}

// commit writes msgs in one transaction of l's producer, timing its steps.
func (l *txnLoop) commit(msgs []*sarama.ProducerMessage, steps *TxnSteps) error {
	p := l.prod
	abortable := func() bool {
		st := p.TxnStatus()
		return st&sarama.ProducerTxnFlagAbortableError != 0 && st&sarama.ProducerTxnFlagFatalError == 0
	}
	if st := p.TxnStatus(); st&sarama.ProducerTxnFlagInTransaction != 0 || abortable() {
		// An earlier transaction was left open (its abort failed): abort
		// it now, or BeginTxn fails.
		err := p.AbortTxn()
		steps.Mark("abort earlier")
		if err != nil {
			return fmt.Errorf("abort an earlier transaction: %w", err)
		}
	}
	err := p.BeginTxn()
	steps.Mark("begin")
	if err == nil {
		err = p.SendMessages(msgs)
		steps.Mark("send")
		if err == nil {
			l.committing.Store(true)
			err = p.CommitTxn()
			steps.Mark("commit")
		}
	}
	if err != nil && abortable() && !Fenced(err) {
		_ = p.AbortTxn()
	}
	return err
}

// Unusable reports whether a transactional producer whose call failed with
// err, and whose transaction status is now st, can never write again, so
// that a new one must be started (its InitProducerId also aborts what the
// old one left open). It is so when it is fenced, when its status is a
// fatal error, and when its state machine refuses the next step
// (ErrTransitionNotAllowed: after a broker failure it can be left in a
// state from which neither a new transaction nor an abort may start).
func Unusable(err error, st sarama.ProducerTxnStatusFlag) bool {
	return Fenced(err) || st&sarama.ProducerTxnFlagFatalError != 0 || errors.Is(err, sarama.ErrTransitionNotAllowed)
}

// Fenced reports whether err means a transactional producer may never
// write again: another producer took its transactional id, or the group
// coordinator refused the session's metadata that the transaction carried
// (a later generation, or the member was expelled).
func Fenced(err error) bool {
	for _, target := range []error{
		sarama.ErrProducerFenced, sarama.ErrInvalidProducerEpoch, sarama.ErrTransactionalIDAuthorizationFailed,
		sarama.ErrIllegalGeneration, sarama.ErrUnknownMemberId, sarama.ErrFencedInstancedId,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
