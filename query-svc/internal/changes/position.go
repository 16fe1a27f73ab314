// Package changes is the live change stream of the snapshot topic (GET
// /api/changes): the stream position that is each Server-Sent Event's id,
// the SSE wire format, the change event, and the Kafka source it reads.
// It holds no HTTP routing; query-svc's ports package serves it.
package changes

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// MaxIDLength bounds the length of an id that Parse accepts. An id lists
// every partition of the topic, about 20 characters each at most.
const MaxIDLength = 8192

// ErrMalformed is returned (wrapped) by Parse for an id that is not a
// position.
var ErrMalformed = errors.New("malformed stream position")

// Position is a point in the change stream of one snapshot generation:
// the next offset to deliver in every partition of the generation's
// snapshot topic. Every record before it, in every partition, has been
// delivered (or skipped as undecodable); none after it has.
//
// Its text form, the SSE event id, is "g<generation>:<p>=<offset>,..."
// with every partition in order, for example "g2:0=123,1=45,2=0,3=7".
// Listing every partition makes the id self-contained: a stream that
// resumes from it, on any instance, starts each partition exactly there.
type Position struct {
	Generation int
	Next       map[int32]int64
}

// String returns the id form of p.
func (p Position) String() string {
	var b strings.Builder
	b.WriteByte('g')
	b.WriteString(strconv.Itoa(p.Generation))
	b.WriteByte(':')
	for i, part := range slices.Sorted(maps.Keys(p.Next)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(int64(part), 10))
		b.WriteByte('=')
		b.WriteString(strconv.FormatInt(p.Next[part], 10))
	}
	return b.String()
}

// Clone returns a copy of p that shares nothing with it.
func (p Position) Clone() Position {
	return Position{Generation: p.Generation, Next: maps.Clone(p.Next)}
}

// Parse reads an id written by Position.String. It accepts exactly that
// form: a generation of at least 1, at least one partition, each listed
// once, partitions and offsets non-negative decimal integers without signs
// or spaces.
func Parse(id string) (Position, error) {
	bad := func(why string) (Position, error) {
		return Position{}, fmt.Errorf("%w: %s", ErrMalformed, why)
	}
	if len(id) > MaxIDLength {
		return bad(fmt.Sprintf("longer than %d characters", MaxIDLength))
	}
	gen, parts, ok := strings.Cut(id, ":")
	if !ok || !strings.HasPrefix(gen, "g") {
		return bad(`not of the form "g<generation>:<partition>=<offset>,..."`)
	}
	n, err := number(gen[1:], 31)
	if err != nil || n < 1 {
		return bad("the generation must be an integer of at least 1")
	}
	if parts == "" {
		return bad("no partition")
	}
	pos := Position{Generation: int(n), Next: map[int32]int64{}}
	for item := range strings.SplitSeq(parts, ",") {
		ps, os, ok := strings.Cut(item, "=")
		if !ok {
			return bad(fmt.Sprintf("%q is not <partition>=<offset>", item))
		}
		p, err := number(ps, 31)
		if err != nil {
			return bad(fmt.Sprintf("partition %q is not a non-negative integer", ps))
		}
		o, err := number(os, 63)
		if err != nil {
			return bad(fmt.Sprintf("offset %q is not a non-negative integer", os))
		}
		if _, dup := pos.Next[int32(p)]; dup {
			return bad(fmt.Sprintf("partition %d is listed twice", p))
		}
		pos.Next[int32(p)] = o
	}
	return pos, nil
}

// number parses a non-negative decimal integer of at most bits bits, with
// digits only (no sign, no space).
func number(s string, bits int) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a non-negative integer")
	}
	return strconv.ParseInt(s, 10, bits+1)
}

// Bounds are the offsets of one partition when a stream starts: the
// oldest offset, the last stable offset (the end a read_committed reader
// can read up to: no open transaction below it) and the high-water mark.
type Bounds struct {
	Oldest, Stable, High int64
}

// How a stream starts, as StartAt decides.
const (
	FromEnd       = "end"           // live changes only (no Last-Event-ID)
	FromBeginning = "beginning"     // ?from=beginning: every record the topic holds
	FromLast      = "last-event-id" // resumed exactly after the last event delivered
	FromReset     = "reset"         // the id was of another generation: from its beginning, state re-sent
)

// ErrForeign is returned (wrapped) by StartAt for an id of the current
// generation that cannot come from its topic: it names a partition the
// topic does not have, or an offset beyond a partition's end.
var ErrForeign = errors.New("stream position does not belong to this topic")

// StartAt returns where a stream of generation gen starts, given the
// bounds of every partition of the generation's snapshot topic and the
// client's last event id (nil if it sent none):
//
//   - no id: the stable end of every partition, or with fromBeginning the
//     oldest offset;
//   - an id of generation gen: exactly there. A partition the id does not
//     list starts at its oldest offset, and an offset below the oldest (the
//     records were deleted) at the oldest;
//   - an id of another generation: the oldest offset of every partition of
//     gen (FromReset). The stream then sends the whole state again.
func StartAt(gen int, bounds map[int32]Bounds, last *Position, fromBeginning bool) (Position, string, error) {
	pos := Position{Generation: gen, Next: make(map[int32]int64, len(bounds))}
	switch {
	case last == nil && !fromBeginning:
		for p, b := range bounds {
			pos.Next[p] = b.Stable
		}
		return pos, FromEnd, nil
	case last == nil || last.Generation != gen:
		for p, b := range bounds {
			pos.Next[p] = b.Oldest
		}
		if last == nil {
			return pos, FromBeginning, nil
		}
		return pos, FromReset, nil
	}
	for p, next := range last.Next {
		b, ok := bounds[p]
		if !ok {
			return Position{}, "", fmt.Errorf("%w: it names partition %d, and the topic has %d partitions", ErrForeign, p, len(bounds))
		}
		if next > b.High {
			return Position{}, "", fmt.Errorf("%w: offset %d of partition %d is beyond its end (%d)", ErrForeign, next, p, b.High)
		}
	}
	for p, b := range bounds {
		next, ok := last.Next[p]
		if !ok || next < b.Oldest {
			next = b.Oldest
		}
		pos.Next[p] = next
	}
	return pos, FromLast, nil
}
