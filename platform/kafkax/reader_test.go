package kafkax

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/IBM/sarama"
)

// walkCommitted passes on what a read_committed consumer receives. Each
// batch here is one record: "c" a committed record, "a" one of an aborted
// transaction, "A" an abort marker and "C" a commit marker, each with its
// producer id.
func TestWalkCommittedReadsACommitAfterAnAbortOfTheSameProducer(t *testing.T) {
	type rec struct {
		kind string
		pid  int64
	}
	for _, tc := range []struct {
		name    string
		recs    []rec
		aborted map[int64]int64 // producer id → first offset of its aborted transaction
		want    string          // offsets passed on
	}{
		{"a replaced producer: abort, then a commit of the same id",
			[]rec{{"a", 1}, {"A", 1}, {"c", 1}, {"C", 1}}, map[int64]int64{1: 0}, "[2]"},
		{"an abort among another producer's commits",
			[]rec{{"c", 2}, {"a", 1}, {"c", 2}, {"a", 1}, {"A", 1}, {"C", 2}, {"c", 1}, {"C", 1}}, map[int64]int64{1: 1}, "[0 2 6]"},
		{"no abort", []rec{{"c", 1}, {"C", 1}}, nil, "[0]"},
	} {
		block := &sarama.FetchResponseBlock{}
		for pid, first := range tc.aborted {
			block.AbortedTransactions = append(block.AbortedTransactions, &sarama.AbortedTransaction{ProducerID: pid, FirstOffset: first})
		}
		for off, r := range tc.recs {
			b := &sarama.RecordBatch{FirstOffset: int64(off), ProducerID: r.pid, IsTransactional: true, Control: r.kind == "A" || r.kind == "C"}
			record := &sarama.Record{Value: []byte(r.kind)}
			if b.Control {
				record.Key = []byte{0, 0, 0, 0} // version 0, type abort
				if r.kind == "C" {
					record.Key[3] = 1
				}
			}
			b.Records = []*sarama.Record{record}
			block.RecordsSet = append(block.RecordsSet, &sarama.Records{RecordBatch: b})
		}
		var got []int64
		covered, ok := walkCommitted(block, 0, func(off int64, _ *sarama.Record) { got = append(got, off) })
		if !ok || covered != int64(len(tc.recs)) || fmt.Sprint(got) != tc.want {
			t.Errorf("%s: read %v (covered %d, ok %t), want %s (covered %d)", tc.name, got, covered, ok, tc.want, len(tc.recs))
		}
	}
}

// A Read retries what a moved leader, a stale metadata or an unreachable
// broker answers, and gives up on anything else (transient, Unreachable).
func TestTransientErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, refused := net.Dial("tcp", addr) // nothing listens there now
	if refused == nil {
		t.Fatalf("a dial to %s, closed, succeeded", addr)
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"leader moved", sarama.ErrNotLeaderForPartition, true},
		{"leader moved, wrapped", fmt.Errorf("high-water mark: %w", sarama.ErrNotLeaderForPartition), true},
		{"no broker known", sarama.ErrOutOfBrokers, true},
		{"broker not connected", sarama.ErrNotConnected, true},
		{"connection refused (a dead broker)", refused, true},
		{"connection closed (by the fence watch)", &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"connection ended", io.EOF, true},
		{"offset out of range", sarama.ErrOffsetOutOfRange, false},
		{"authorization", sarama.ErrTopicAuthorizationFailed, false},
		{"cancelled", context.Canceled, false},
		{"anything else", errors.New("bad record"), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("%s (%v): transient = %t, want %t", tc.name, tc.err, got, tc.want)
		}
	}
}
