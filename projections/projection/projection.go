// Package projection is the one projection step: from a profile's state
// before and after an event, the snapshot and email index records to
// write. The projector, replay and any other writer of the snapshot and
// email index topics build their records here and only turn them into
// their transport's messages, so that every generation is written alike.
//
// The package is pure: it does no I/O and holds no state.
package projection

import (
	"strconv"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/topology"
)

// Codec encodes what a step writes: the snapshot value of a profile, and
// the key that stands for an email in the email index.
type Codec interface {
	EncodeSnapshot(p events.Profile) ([]byte, error)
	events.EmailKeyer
}

// Target is where a step's records go.
type Target struct {
	// Snapshots and EmailIndex are the topics of the generation written.
	Snapshots, EmailIndex string
	// Source is the CloudEvents source of records made from an event
	// (events.Headers).
	Source string
}

// Record is one record to write.
type Record struct {
	Topic string
	Key   string
	// Value is the record's value; nil is a tombstone.
	Value []byte
	// Headers are the record's headers. All records of one step share one
	// map; it is not to be modified.
	Headers map[string]string
	// ID is the message id of a record made from an event (the event's id,
	// with "-unindex" or "-index" for the email index); "" otherwise.
	ID string
}

// Step returns the records that take the snapshot and email index topics
// from prev to next, the state after e (nil when next is a folded state
// written without its event). In order:
//
//   - a tombstone under the email index key of prev's email when prev is
//     live and next is not, or holds another email;
//   - the snapshot value under the email index key of next's email when
//     next is live;
//   - the snapshot of next under its uid (a tombstone when next is
//     deleted).
//
// The snapshot comes last: a snapshot that exists proves that the records
// before it were written. Each record carries events.HeaderVersion, and,
// when e is given, e's CloudEvents headers (events.Headers with
// t.Source). Each (email, uid) key of the index has one writer, the
// writer of the uid's partition, so the index needs no read-modify-write
// of a shared per-email value.
func Step(c Codec, t Target, prev, next events.Profile, e *events.Event) ([]Record, error) {
	value, err := c.EncodeSnapshot(next)
	if err != nil {
		return nil, err
	}
	var headers map[string]string
	id := ""
	if e != nil {
		headers, id = events.Headers(*e, t.Source), e.ID
	} else {
		headers = make(map[string]string, 1)
	}
	headers[events.HeaderVersion] = strconv.FormatInt(next.Version, 10)
	withSuffix := func(suffix string) string {
		if id == "" {
			return ""
		}
		return id + suffix
	}

	out := make([]Record, 0, 3)
	gained, lost := events.EmailDelta(prev, next)
	// Both empty with both live means the same email; a live profile may
	// hold the empty email (its personal data erased), which is an index
	// entry too.
	if prev.Exists() && (!next.Exists() || gained != "" || lost != "") {
		out = append(out, Record{
			Topic: t.EmailIndex, Key: topology.IndexKey(c.EmailKey(prev.Email), next.UID),
			Headers: headers, ID: withSuffix("-unindex"),
		})
	}
	if next.Exists() {
		out = append(out, Record{
			Topic: t.EmailIndex, Key: topology.IndexKey(c.EmailKey(next.Email), next.UID),
			Value: value, Headers: headers, ID: withSuffix("-index"),
		})
	}
	out = append(out, Record{Topic: t.Snapshots, Key: next.UID, Value: value, Headers: headers, ID: id})
	return out, nil
}

// Message returns r as a sarama producer message with the given headers
// (RecordHeaders of r.Headers, which the records of one step may share).
func (r Record) Message(headers []sarama.RecordHeader) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: r.Topic, Key: sarama.StringEncoder(r.Key), Headers: headers}
	if r.Value != nil {
		m.Value = sarama.ByteEncoder(r.Value)
	}
	return m
}

// RecordHeaders returns headers as sarama record headers.
func RecordHeaders(headers map[string]string) []sarama.RecordHeader {
	out := make([]sarama.RecordHeader, 0, len(headers))
	for k, v := range headers {
		out = append(out, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	return out
}
