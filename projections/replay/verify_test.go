package replay

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"
)

func TestCompareClassifiesEveryKey(t *testing.T) {
	sum := func(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }
	live := map[string]entry{
		"same":          {version: 3, live: true, sum: sum("a")},
		"changed-later": {version: 5, live: true, sum: sum("b")},
		"other-content": {version: 2, live: true, sum: sum("c")},
		"deleted-both":  {version: 4},
		"compacted":     {}, // tombstone cleaned away: version unknown
		"only-live":     {version: 1, live: true, sum: sum("d")},
		"behind":        {version: 1, live: true, sum: sum("e")},
	}
	cand := map[string]entry{
		"same":          {version: 3, live: true, sum: sum("a")},
		"changed-later": {version: 4, live: true, sum: sum("x")},
		"other-content": {version: 2, live: true, sum: sum("not c")},
		"deleted-both":  {version: 4},
		"compacted":     {version: 7},
		"only-new":      {version: 1, live: true, sum: sum("f")},
		"behind":        {version: 2, live: true, sum: sum("e2")},
	}
	want := map[string]int{
		"same": same, "changed-later": newerInLive, "other-content": different, "deleted-both": same,
		"compacted": same, "only-live": newerInLive, "only-new": different, "behind": different,
	}
	got := map[string]int{}
	compare(live, cand, func(key string, verdict int, _, _ entry) { got[key] = verdict })
	if len(got) != len(want) {
		t.Fatalf("compared %d keys, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: verdict %d, want %d", k, got[k], v)
		}
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		name        string
		total, done int64
		want        []string
	}{
		{"known total", 1000, 250, []string{"250/1000 events (25%)", "events/s", "ETA"}},
		{"unknown total", 0, 42, []string{"42 events", "elapsed"}},
		{"nothing done", 10, 0, []string{"0/10 events (0%)", "ETA ?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewProgress("replay: reading", "events", tt.total)
			p.start = time.Now().Add(-10 * time.Second)
			p.Add(tt.done)
			line := p.Line()
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("line %q lacks %q", line, w)
				}
			}
		})
	}
}
