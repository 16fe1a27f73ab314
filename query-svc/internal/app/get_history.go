package app

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"profiles/events"
)

// GetHistory asks for the events of one profile, oldest first. With
// MinVersion > 0 the query waits, up to the handler's bound, until the
// history holds that version or later (or ends with the delete, after which
// nothing can follow).
type GetHistory struct {
	UID        string
	MinVersion int64
}

// HistoryEntry is one event of a profile's history, as the API shows it and
// as the view stores it.
type HistoryEntry struct {
	Type       events.Type `json:"type"`
	Version    int64       `json:"version"`
	OccurredAt time.Time   `json:"occurredAt"`
	// Changes maps each field the event set to its new value (raw JSON, so
	// that a field of any type passes through).
	Changes map[string]json.RawMessage `json:"changes"`
	// Erased marks an event whose personal data was crypto-shredded by the
	// profile's delete: Changes is empty.
	Erased bool `json:"erased,omitempty"`
}

// Erase returns h with its personal data gone.
func (h HistoryEntry) Erase() HistoryEntry {
	if h.Type == events.TypeProfileDeleted {
		return h // it has none
	}
	h.Changes, h.Erased = map[string]json.RawMessage{}, true
	return h
}

// NewHistoryEntry builds the history entry of an event.
//
// Changes come from the event's payload, not from a diff of the states
// before and after it: an event carries exactly the fields it set
// (command-svc appends an event only for a field whose value differs, and
// a ProfileCreated sets every field from nothing). So an entry depends on
// its event alone: re-reading one event rewrites the same entry, a skipped
// poison record or a partition read again from any offset never corrupts
// the entries after it, the view keeps no per-profile state for it, and a
// field added to a payload (through events.Decode's upcasting of older
// schema versions too) shows up without a change here. JSON nulls are
// left out, and so are empty strings of a ProfileCreated (a field that was
// unset and still is did not change). A ProfileDeleted has no changes.
func NewHistoryEntry(e events.Event) (HistoryEntry, error) {
	if e.Data == nil || e.Data.EventType() != e.Type {
		return HistoryEntry{}, fmt.Errorf("%w: payload does not match type %q", events.ErrInvalidEvent, e.Type)
	}
	if e.Erased {
		return HistoryEntry{Type: e.Type, Version: e.Version, OccurredAt: e.OccurredAt.UTC()}.Erase(), nil
	}
	raw, err := json.Marshal(e.Data)
	if err != nil {
		return HistoryEntry{}, fmt.Errorf("encode %s payload: %w", e.Type, err)
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return HistoryEntry{}, fmt.Errorf("%w: %s payload is not a JSON object: %v", events.ErrInvalidEvent, e.Type, err)
	}
	changes := make(map[string]json.RawMessage, len(fields))
	for name, v := range fields {
		if string(v) == "null" || (e.Type == events.TypeProfileCreated && string(v) == `""`) {
			continue
		}
		changes[name] = v
	}
	return HistoryEntry{Type: e.Type, Version: e.Version, OccurredAt: e.OccurredAt.UTC(), Changes: changes}, nil
}

// HistoryView is what GetHistory needs of the materialized view.
type HistoryView interface {
	// History returns the entries of uid ordered by version; none (and no
	// error) for a uid without events.
	History(uid string) ([]HistoryEntry, error)
	// WatchHistory returns a channel closed at the next change of the
	// history of uid (or one of the whole view), and the func that ends
	// the watch (see ProfileView.WatchProfile).
	WatchHistory(uid string) (<-chan struct{}, func())
}

// GetHistoryHandler answers GetHistory. MaxWait bounds a MinVersion wait;
// the zero value means no waiting at all.
type GetHistoryHandler struct {
	View    HistoryView
	MaxWait time.Duration
}

// Handle returns the history, ErrNotFound when the uid has no event, or
// ErrNotYet when MinVersion was not reached within MaxWait (or before ctx
// ended).
//
// A deleted profile's history stays readable and ends with its
// ProfileDeleted entry: the event log keeps every event forever. But the
// delete crypto-shredded the profile's personal data, so every entry of a
// deleted profile shows as erased, without changes (the view erases them
// too when it reads the delete; this also covers entries it read before).
func (h GetHistoryHandler) Handle(ctx context.Context, q GetHistory) ([]HistoryEntry, error) {
	var w waiter
	defer w.stop()
	for {
		changed := w.before(q.MinVersion, func() (<-chan struct{}, func()) { return h.View.WatchHistory(q.UID) })
		hist, err := h.View.History(q.UID)
		if err != nil {
			return nil, err
		}
		if n := len(hist); n > 0 && hist[n-1].Type == events.TypeProfileDeleted {
			for i := range hist {
				hist[i] = hist[i].Erase()
			}
			return hist, nil // nothing follows a delete, so waiting for more is pointless
		}
		if n := len(hist); n > 0 && hist[n-1].Version >= q.MinVersion {
			return hist, nil
		}
		if len(hist) == 0 && q.MinVersion == 0 {
			return nil, ErrNotFound
		}
		if !w.wait(ctx, h.MaxWait, changed) {
			return nil, ErrNotYet
		}
	}
}
