package view

import "testing"

// scanStored reads only the form putNewer writes, and leaves anything else
// to the decoder.
func TestScanStored(t *testing.T) {
	const live = `{"uid":"a","username":"b","displayName":"","email":"","version":42,"createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}`
	const gone = `{"uid":"a","username":"","displayName":"","email":"","version":7,"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z","deleted":true}`
	for _, tc := range []struct {
		v       string
		version int64
		deleted bool
		ok      bool
	}{
		{live, 42, false, true},
		{gone, 7, true, true},
		{`{"uid":"a","version":1}`, 0, false, false},
		{`{"username":"b","uid":"a","version":1,"createdAt":"x","updatedAt":"y"}`, 0, false, false},
		{`{"uid":"a","version":01,"createdAt":"x","updatedAt":"y"}`, 0, false, false},
		{`{"uid":"a","version":-1,"createdAt":"x","updatedAt":"y"}`, 0, false, false},
		{`{"uid":"a","version":1234567890123456789,"createdAt":"x","updatedAt":"y"}`, 0, false, false},
		{`{"uid":"a","version":3,"createdAt":"x","updatedAt":"y","deleted":false}`, 0, false, false},
		{`{"uid":"a","version":3,"createdAt":"x","updatedAt":"y","erased":true}`, 0, false, false},
	} {
		version, deleted, ok := scanStored([]byte(tc.v))
		if ok != tc.ok || (ok && (version != tc.version || deleted != tc.deleted)) {
			t.Errorf("%s: %d %v %v, want %d %v %v", tc.v, version, deleted, ok, tc.version, tc.deleted, tc.ok)
		}
	}
}
