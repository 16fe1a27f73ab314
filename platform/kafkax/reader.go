package kafkax

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
)

// ReadOptions configures Read. Topic and Handle are required.
type ReadOptions struct {
	Topic string
	// Partitions to read; nil means every partition of the topic.
	Partitions []int32
	// Start returns the offset to start partition p at: a real offset (the
	// next one to read) or sarama.OffsetOldest. nil means OffsetOldest.
	Start func(p int32) (int64, error)
	// Handle receives the records of partition p in offset order, in batches
	// of at most MaxBatch. It is called from one goroutine per partition, so
	// calls for different partitions run concurrently. An error stops Read.
	Handle func(ctx context.Context, p int32, records []*sarama.ConsumerMessage) error
	// CaughtUp, if set, is called once per partition as soon as everything
	// that was in the partition when Read started has been handled.
	CaughtUp func(p int32)
	// MaxBatch bounds a batch; 0 means 1000.
	MaxBatch int
	// StopAtEnd makes Read return once every partition has caught up,
	// instead of following the topic until ctx ends.
	StopAtEnd bool
	// Until, if set, replaces "the end at start" of partition p: Read
	// catches up at that offset, and with StopAtEnd it never hands over a
	// record at or beyond it. Replay uses it to fold the log up to an exact
	// cutoff.
	Until func(p int32) int64
	// Fetcher, if set, is the consumer to read with, shared with other
	// Reads: nil means a Fetcher of this Read's own, closed when it returns.
	Fetcher *Fetcher
}

// Read consumes the partitions of a topic with a plain sarama consumer and
// hands their records to opts.Handle in batches. It returns nil when ctx
// ends (or, with StopAtEnd, when all partitions caught up), and the first
// error of any partition otherwise.
//
// It uses sarama directly, not a watermill subscriber, because its callers
// need three things watermill cannot give: starting each partition at an
// offset the caller stored itself (atomically with its view, not in the
// consumer group), knowing when a partition has reached the high-water mark
// it had at start (readiness), and whole batches instead of one un-acked
// message per partition, which is what makes a catch-up fast.
func Read(ctx context.Context, client sarama.Client, opts ReadOptions) error {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	parts := opts.Partitions
	if parts == nil {
		var err error
		if parts, err = client.Partitions(opts.Topic); err != nil {
			return fmt.Errorf("partitions of %s: %w", opts.Topic, err)
		}
	}
	// The partition consumers fetch over connections of their own (see
	// NewFetcher); client carries the requests that want a quick answer.
	fetcher := opts.Fetcher
	if fetcher == nil {
		var err error
		if fetcher, err = NewFetcher(client); err != nil {
			return fmt.Errorf("consumer for %s: %w", opts.Topic, err)
		}
		defer fetcher.Close()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readPartition(ctx, client, fetcher, opts, p); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func readPartition(ctx context.Context, client sarama.Client, fetcher *Fetcher, opts ReadOptions, p int32) error {
	consumer, closing := fetcher.consumer, &fetcher.closing
	var end int64
	err := retry(ctx, client, opts.Topic, func() (err error) {
		end, err = client.GetOffset(opts.Topic, p, sarama.OffsetNewest)
		return err
	})
	if err != nil {
		return fmt.Errorf("high-water mark of %s/%d: %w", opts.Topic, p, err)
	}
	if opts.Until != nil {
		end = min(end, opts.Until(p))
	}
	start := sarama.OffsetOldest
	if opts.Start != nil {
		if start, err = opts.Start(p); err != nil {
			return err
		}
	}
	next := start
	if next == sarama.OffsetOldest {
		err := retry(ctx, client, opts.Topic, func() (err error) {
			next, err = client.GetOffset(opts.Topic, p, sarama.OffsetOldest)
			return err
		})
		if err != nil {
			return fmt.Errorf("oldest offset of %s/%d: %w", opts.Topic, p, err)
		}
	}
	caught := false
	checkCaughtUp := func() bool {
		if !caught && next >= end {
			caught = true
			slog.Debug("partition read to its end", "topic", opts.Topic, "partition", p, "next", next, "end", end)
			if opts.CaughtUp != nil {
				opts.CaughtUp(p)
			}
		}
		return caught && opts.StopAtEnd
	}
	if checkCaughtUp() {
		return nil
	}
	if end-next <= drainedProbeMax {
		// A short tail past the stored offset is often transaction
		// markers only (every transaction ends with one): one Fetch says
		// so now, instead of a first fetch's wait and a moment of silence
		// (below).
		if ok, err := Drained(client, opts.Topic, p, next, end); err == nil && ok {
			next = end
			if checkCaughtUp() {
				return nil
			}
		}
	}

	var pc sarama.PartitionConsumer
	err = retry(ctx, client, opts.Topic, func() (err error) {
		pc, err = consumer.ConsumePartition(opts.Topic, p, start)
		if errors.Is(err, sarama.ErrOffsetOutOfRange) {
			// The stored offset is not in the log (the topic was recreated or
			// truncated): everything we hold for it is suspect, so start over.
			slog.Warn("stored offset out of range; reading partition from the start",
				"topic", opts.Topic, "partition", p, "offset", start, "end", end)
			start = sarama.OffsetOldest
			pc, err = consumer.ConsumePartition(opts.Topic, p, start)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("consume %s/%d from %d: %w", opts.Topic, p, start, err)
	}
	defer func() {
		if pc != nil {
			closeInBackground(pc, closing)
		}
	}()
	// reopen replaces a partition consumer that sarama shut down. It does
	// that on OFFSET_OUT_OF_RANGE, which a broker that was paused and
	// still believes it leads can answer for an offset the real leader
	// has: the read goes on from next once the metadata names the leader.
	reopen := func() error {
		closeInBackground(pc, closing)
		pc = nil
		slog.Warn("partition consumer closed by the client; reopening it", "topic", opts.Topic, "partition", p, "next", next)
		return retry(ctx, client, opts.Topic, func() (err error) {
			_ = client.RefreshMetadata(opts.Topic)
			pc, err = consumer.ConsumePartition(opts.Topic, p, next)
			if errors.Is(err, sarama.ErrOffsetOutOfRange) {
				err = sarama.ErrNotLeaderForPartition // retried: see above
			}
			return err
		})
	}

	// The end counts transaction markers, which a read_committed consumer
	// never receives, so the offset after the last record may stay below
	// it. A partition that has fetched up to the end and then waits a
	// moment with nothing to receive has been read completely. The timer
	// restarts after every batch, so a slow Handle never counts as idle.
	idle := time.NewTimer(idleAfter)
	defer idle.Stop()
	batch := make([]*sarama.ConsumerMessage, 0, opts.MaxBatch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case cerr := <-pc.Errors():
			// sarama retries by itself; a consumer error is worth a log line only.
			slog.Warn("kafka consumer error", "topic", opts.Topic, "partition", p, "err", cerr)
			continue
		case <-idle.C:
			if len(pc.Messages()) == 0 && pc.HighWaterMarkOffset() >= end && !caught {
				if ok, err := Drained(client, opts.Topic, p, next, end); err == nil && ok {
					next = max(next, end)
					if checkCaughtUp() {
						return nil
					}
				}
			}
			idle.Reset(idleAfter)
			continue
		case msg, ok := <-pc.Messages():
			if !ok {
				if err := reopen(); err != nil {
					return fmt.Errorf("consume %s/%d from %d: %w", opts.Topic, p, next, err)
				}
				continue
			}
			batch = append(batch[:0], msg)
		}
	drain:
		for len(batch) < opts.MaxBatch {
			select {
			case msg, ok := <-pc.Messages():
				if !ok {
					break drain // reopened at the next receive
				}
				batch = append(batch, msg)
			default:
				break drain
			}
		}
		if opts.StopAtEnd {
			for len(batch) > 0 && batch[len(batch)-1].Offset >= end {
				batch = batch[:len(batch)-1]
			}
			if len(batch) == 0 {
				next = end
				checkCaughtUp()
				return nil
			}
		}
		if err := opts.Handle(ctx, p, batch); err != nil {
			return fmt.Errorf("handle %s/%d at offset %d: %w", opts.Topic, p, batch[0].Offset, err)
		}
		next = batch[len(batch)-1].Offset + 1
		release(batch)
		if checkCaughtUp() {
			return nil
		}
		idle.Reset(idleAfter)
	}
}

// closeInBackground shuts pc down without waiting, and marks closing done
// once it is shut: sarama closes a partition consumer only when its
// broker's fetch in flight returns (up to Consumer.MaxWaitTime, 500 ms,
// and longer while a broker is slow), and a Read with StopAtEnd that
// waited for that returned half a second or more after its last partition
// had caught up, on every restart. pc's channels are drained until sarama
// closes them, as AsyncClose requires.
func closeInBackground(pc sarama.PartitionConsumer, closing *sync.WaitGroup) {
	pc.AsyncClose()
	closing.Add(2)
	go func() {
		defer closing.Done()
		for range pc.Errors() {
		}
	}()
	go func() {
		defer closing.Done()
		for range pc.Messages() {
		}
	}()
}

// Fetcher is the consumer that Reads fetch with. The Reads that share one
// (ReadOptions.Fetcher) are fetched together, whatever their topics: one
// Fetch request per broker carries the partitions of all of them, and one
// record committed to any of them wakes that one request, where each Read
// with a consumer of its own has its own request waiting at the broker.
// This is Kafka Streams' restore consumer, which updates every standby
// task of a thread at once.
//
// A Fetcher fetches over a client of its own, with the configuration and
// brokers of the client it was made from. A fetch that finds nothing new
// waits at the broker for up to Consumer.MaxWaitTime (500 ms), and a
// broker answers the requests of one connection in order: on a shared
// client, every offset lookup, probe, heartbeat and join sent to that
// broker waited behind a follower's fetch. Measured on one broker, with a
// follower of another topic on the client: an offset lookup took up to
// 510 ms instead of 2 ms, and reading a six-partition tail 1.2-3.1 s
// instead of 0.14 s.
//
// Reads may share a Fetcher concurrently, as long as no two of them read
// the same partition of a topic at once (sarama refuses the second). Close
// it once every Read that uses it has returned.
type Fetcher struct {
	client   sarama.Client
	consumer sarama.Consumer
	closing  sync.WaitGroup // the partition consumers shutting down
}

// NewFetcher returns a Fetcher of its own client, made with client's
// configuration and brokers.
func NewFetcher(client sarama.Client) (*Fetcher, error) {
	var addrs []string
	for _, b := range client.Brokers() {
		addrs = append(addrs, b.Addr())
	}
	if len(addrs) == 0 {
		return nil, sarama.ErrOutOfBrokers
	}
	fc, err := NewClient(addrs, client.Config())
	if err != nil {
		return nil, err
	}
	consumer, err := sarama.NewConsumerFromClient(fc)
	if err != nil {
		fc.Close()
		return nil, err
	}
	return &Fetcher{client: fc, consumer: consumer}, nil
}

// Close returns at once, and closes the consumer and its client in the
// background once the partition consumers of the Reads that used it have
// shut down (see closeInBackground).
func (f *Fetcher) Close() {
	go func() {
		f.closing.Wait()
		f.consumer.Close()
		f.client.Close()
	}()
}

// drainedProbeMax bounds the tail, in offsets, that a partition's start
// checks for holding transaction markers only (drained): a longer one
// holds records, and the probe would fetch them for nothing.
const drainedProbeMax = 1024

// idleAfter is how long a partition that has fetched up to its end must
// wait with nothing to receive before it counts as read (see readPartition).
const idleAfter = 250 * time.Millisecond

// retry runs op until it succeeds, fails with an error that is not a
// transient leadership, metadata or connection error, or ctx ends.
// Between attempts it refreshes the topic's metadata: right after a topic
// is created or a broker restarts, a client's view of the leaders is often
// stale, and a leader that died is named until the controller fences it
// (broker.session.timeout.ms), then its partitions move.
func retry(ctx context.Context, client sarama.Client, topic string, op func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := op()
		if err == nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		_ = client.RefreshMetadata(topic)
	}
}

func transient(err error) bool {
	for _, kerr := range []sarama.KError{
		sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrUnknownTopicOrPartition,
		sarama.ErrReplicaNotAvailable, sarama.ErrOffsetNotAvailable, sarama.ErrNotCoordinatorForConsumer,
		sarama.ErrRequestTimedOut, sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch,
	} {
		if errors.Is(err, kerr) {
			return true
		}
	}
	return errors.Is(err, sarama.ErrOutOfBrokers) || errors.Is(err, sarama.ErrNotConnected) || Unreachable(err)
}

// Unreachable reports whether err says that a broker could not be reached
// or dropped the connection: refused (a broker that died), reset or closed
// (the fence watch closes the connections to a fenced broker), or timed
// out. Such a request is worth sending again, after a metadata refresh:
// the metadata names a dead broker until the controller fences it
// (broker.session.timeout.ms), and sarama's client retries a request once
// at most, its admin not at all. A Read or a start that gave up on it
// stopped the service whose task it was.
func Unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, sarama.ErrBrokerNotAvailable)
}

// Drained reports whether partition p of topic holds no record that a
// read_committed consumer would receive in [next, end): only transaction
// markers or records of aborted transactions. Callers ask when a partition
// consumer has been idle below its end, to tell "only markers are left"
// from "the consumer is starved" (sarama's broker consumer stops feeding a
// partition while another partition's handler is slow, and a partition
// consumer's high-water mark is known before anything is fetched, so
// neither silence nor the mark proves anything), and to tell a stored
// position (the offset after the last record read) that has read
// everything from one that lags, since the end counts the markers.
//
// It sends one read_committed Fetch from next to the partition's leader
// and looks at the record batches itself. It answers false when the
// answer does not reach end (an open transaction holds the last stable
// offset below it, or the response was cut short); the caller asks again.
func Drained(client sarama.Client, topic string, p int32, next, end int64) (bool, error) {
	if next >= end {
		return true, nil
	}
	block, err := fetchCommitted(client, topic, p, next)
	if err != nil || block == nil {
		return false, err
	}
	if block.LastStableOffset < end {
		return false, nil
	}
	delivered := false
	covered, ok := walkCommitted(block, next, func(off int64, _ *sarama.Record) {
		if off < end {
			delivered = true // a record the consumer has yet to deliver
		}
	})
	return ok && !delivered && covered >= end, nil
}

// LastRecordOf reads partition p of topic from offset from up to its last
// stable offset, straight from the leader (read_committed), and returns the
// last committed record whose key is key: its value (nil for a tombstone)
// and offset. found is false when there is none.
func LastRecordOf(client sarama.Client, topic string, p int32, from int64, key string) (value []byte, offset int64, found bool, err error) {
	_, err = CommittedRecords(client, topic, p, from, func(off int64, k, v []byte) {
		if string(k) == key {
			value, offset, found = v, off, true
		}
	})
	return value, offset, found, err
}

// CommittedRecords reads partition p of topic from offset from up to its
// last stable offset, straight from the leader (read_committed, one Fetch
// per 4 MiB, without waiting for data), and calls fn with every committed
// record there, in offset order: no transaction marker, no record of an
// aborted transaction. key and value are slices of the response, which is
// not reused: fn may keep them (keeping one keeps the response). It
// returns the offset up to which the partition was read: every committed
// record at or after from and below it was passed to fn.
func CommittedRecords(client sarama.Client, topic string, p int32, from int64, fn func(offset int64, key, value []byte)) (readTo int64, err error) {
	readTo = from
	for {
		block, err := fetchCommitted(client, topic, p, from)
		if err != nil || block == nil {
			return readTo, err
		}
		lso := block.LastStableOffset
		covered, ok := walkCommitted(block, from, func(off int64, r *sarama.Record) {
			if off < lso {
				fn(off, r.Key, r.Value)
			}
		})
		readTo = max(readTo, min(covered, lso))
		if !ok || covered >= lso || covered <= from {
			return readTo, nil
		}
		from = covered
	}
}

// fetchCommitted sends one read_committed Fetch of partition p of topic
// from offset from to its leader, without waiting for data (up to 4 MiB).
func fetchCommitted(client sarama.Client, topic string, p int32, from int64) (*sarama.FetchResponseBlock, error) {
	leader, err := client.Leader(topic, p)
	if err != nil {
		return nil, err
	}
	req := &sarama.FetchRequest{Version: 11, MaxWaitTime: 0, MinBytes: 0, MaxBytes: 4 << 20, Isolation: sarama.ReadCommitted}
	req.AddBlock(topic, p, from, 4<<20, -1)
	resp, err := leader.Fetch(req)
	if err != nil {
		return nil, err
	}
	block := resp.GetBlock(topic, p)
	if block != nil && !errors.Is(block.Err, sarama.ErrNoError) {
		return nil, block.Err
	}
	return block, nil
}

// walkCommitted calls fn for every record of block at or after from that
// a read_committed consumer receives: no transaction marker, no record of
// an aborted transaction. It returns the offset after the last batch in
// the block; ok is false for a block in the legacy message format, which
// our producers never write.
//
// As Kafka's own consumer does, an aborted transaction counts from the
// batch that holds its first offset until its abort marker, once: a
// producer id that aborted a transaction and then committed another (a
// transactional id whose producer was replaced, or that aborted a
// transaction and went on) has the records of the later one read.
func walkCommitted(block *sarama.FetchResponseBlock, from int64, fn func(off int64, r *sarama.Record)) (covered int64, ok bool) {
	pending := slices.SortedFunc(slices.Values(block.AbortedTransactions), func(a, b *sarama.AbortedTransaction) int {
		return cmp.Compare(a.FirstOffset, b.FirstOffset)
	})
	aborted := map[int64]bool{} // producer ids in an aborted transaction
	covered = from
	for _, records := range block.RecordsSet {
		b := records.RecordBatch
		if b == nil {
			return covered, false
		}
		for len(pending) > 0 && pending[0].FirstOffset <= b.LastOffset() {
			aborted[pending[0].ProducerID] = true
			pending = pending[1:]
		}
		covered = max(covered, b.LastOffset()+1)
		if b.Control {
			// The key of a control record is version (int16) and type
			// (int16, 0 = abort): an abort marker ends that transaction.
			if len(b.Records) > 0 && len(b.Records[0].Key) >= 4 && b.Records[0].Key[2] == 0 && b.Records[0].Key[3] == 0 {
				delete(aborted, b.ProducerID)
			}
			continue
		}
		if b.IsTransactional && aborted[b.ProducerID] {
			continue
		}
		for _, r := range b.Records {
			if off := b.FirstOffset + r.OffsetDelta; off >= from {
				fn(off, r)
			}
		}
	}
	return covered, true
}

// release drops batch's records (and those of the larger batches its
// array held before) once they are handled, so that the reused array
// keeps none alive: a record's value is a slice of its whole fetch
// response, up to Fetch.MaxBytes, which one live record keeps in memory.
func release(batch []*sarama.ConsumerMessage) { clear(batch[:cap(batch)]) }
