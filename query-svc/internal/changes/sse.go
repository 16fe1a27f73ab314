package changes

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// Writer writes Server-Sent Events (the text/event-stream format of the
// HTML standard) to w. It writes whole events only; the caller flushes.
type Writer struct {
	W   io.Writer
	buf bytes.Buffer
}

// Event writes one event: an id line (if id is not empty), an event line
// (if event is not empty), one data line per line of data, and the blank
// line that dispatches it. id and event must not hold line breaks.
func (w *Writer) Event(id, event string, data []byte) error {
	w.buf.Reset()
	if id != "" {
		w.field("id", id)
	}
	if event != "" {
		w.field("event", event)
	}
	// A line break inside data starts a new data line; the client joins
	// them with "\n" again. An event without data still needs one line.
	lines := strings.Split(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(data)), "\n")
	for _, l := range lines {
		w.field("data", l)
	}
	w.buf.WriteByte('\n')
	_, err := w.W.Write(w.buf.Bytes())
	return err
}

// Comment writes a comment line, which clients ignore: a heartbeat that
// keeps proxies from closing an idle stream, and shows a dead client.
func (w *Writer) Comment(text string) error {
	_, err := io.WriteString(w.W, ": "+strings.NewReplacer("\r", " ", "\n", " ").Replace(text)+"\n\n")
	return err
}

// Retry writes the reconnection delay that the client should use.
func (w *Writer) Retry(ms int) error {
	_, err := io.WriteString(w.W, "retry: "+strconv.Itoa(ms)+"\n\n")
	return err
}

func (w *Writer) field(name, value string) {
	w.buf.WriteString(name)
	w.buf.WriteString(": ")
	w.buf.WriteString(value)
	w.buf.WriteByte('\n')
}

// Event types of the stream.
const (
	EventReady   = "ready"   // first event: where the stream starts
	EventProfile = "profile" // a profile was created or changed
	EventDeleted = "deleted" // a profile was deleted (a tombstone)
)

// Ready is the data of the first event of a stream. Its id is the start
// position, so a client that sees no change before it disconnects still
// resumes from where it started.
type Ready struct {
	Generation int `json:"generation"`
	// From is how the stream starts: FromEnd, FromBeginning, FromLast or
	// FromReset (the client's id was of another generation, so its state
	// is sent again from the beginning of this one).
	From string `json:"from"`
}

// Change is the data of a profile or deleted event: one record of the
// snapshot topic.
type Change struct {
	UID     string `json:"uid"`
	Version int64  `json:"version"`
	Deleted bool   `json:"deleted"`
	// Profile is the profile after the change; null on delete.
	Profile   *events.Profile `json:"profile"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
}

// Decode returns the change a snapshot record holds, opened with codec, and
// its event type. An error means the record is not a snapshot, or its key
// cannot be read yet (see pii.Codec.DecodeSnapshot).
func Decode(codec *pii.Codec, r *sarama.ConsumerMessage) (Change, string, error) {
	p, err := codec.DecodeSnapshot(string(r.Key), r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
	if err != nil {
		return Change{}, "", err
	}
	c := Change{UID: p.UID, Version: p.Version, Deleted: p.Deleted, Partition: r.Partition, Offset: r.Offset}
	if p.Deleted {
		return c, EventDeleted, nil
	}
	c.Profile = &p
	return c, EventProfile, nil
}

// Record is one record of a snapshot topic as a stream sees it: where it
// is, and the change it holds with its event type, or Err for a record
// that is no snapshot (see Decode; pii.ErrKeyUnavailable: its data key
// cannot be read yet, so it is not poison).
type Record struct {
	Partition int32
	Offset    int64
	Change    Change
	Event     string
	Err       error
}

// DecodeAll decodes records of a snapshot topic with codec, in order,
// into a new slice. It stops after the first record whose data key cannot
// be read yet (pii.ErrKeyUnavailable), which ends a stream: the records
// after it are read again when the client resumes, so none of them waits
// for a key of its own first.
func DecodeAll(codec *pii.Codec, records []*sarama.ConsumerMessage) []Record {
	out := make([]Record, 0, len(records))
	for _, r := range records {
		c, event, err := Decode(codec, r)
		out = append(out, Record{Partition: r.Partition, Offset: r.Offset, Change: c, Event: event, Err: err})
		if errors.Is(err, pii.ErrKeyUnavailable) {
			break
		}
	}
	return out
}

// JSON is json.Marshal for values that always marshal.
func JSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
