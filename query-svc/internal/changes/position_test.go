package changes

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestPositionString(t *testing.T) {
	tests := []struct {
		pos  Position
		want string
	}{
		{Position{1, map[int32]int64{0: 0}}, "g1:0=0"},
		{Position{2, map[int32]int64{3: 7, 0: 123, 2: 0, 1: 45}}, "g2:0=123,1=45,2=0,3=7"},
		{Position{12, map[int32]int64{10: 1, 2: 9223372036854775807}}, "g12:2=9223372036854775807,10=1"},
	}
	for _, tt := range tests {
		if got := tt.pos.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.pos, got, tt.want)
		}
		back, err := Parse(tt.want)
		if err != nil || back.Generation != tt.pos.Generation || !maps.Equal(back.Next, tt.pos.Next) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tt.want, back, err, tt.pos)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		id      string
		gen     int
		next    map[int32]int64
		wantErr bool
	}{
		{"g1:0=0", 1, map[int32]int64{0: 0}, false},
		{"g2:0=123,1=45,2=0,3=7", 2, map[int32]int64{0: 123, 1: 45, 2: 0, 3: 7}, false},
		{"g3:3=7,0=1", 3, map[int32]int64{0: 1, 3: 7}, false}, // any order
		{"g1:5=10", 1, map[int32]int64{5: 10}, false},         // a subset of partitions
		{"g1:0=007", 1, map[int32]int64{0: 7}, false},         // leading zeros are digits
		{"g1:2147483647=9223372036854775807", 1, map[int32]int64{2147483647: 9223372036854775807}, false},

		{"", 0, nil, true},
		{"garbage", 0, nil, true},
		{"1:0=0", 0, nil, true},                    // no g
		{"g:0=0", 0, nil, true},                    // no generation
		{"g0:0=0", 0, nil, true},                   // generation 0 never serves
		{"g-1:0=0", 0, nil, true},                  // negative generation
		{"gx:0=0", 0, nil, true},                   // not a number
		{"g1", 0, nil, true},                       // no colon
		{"g1:", 0, nil, true},                      // no partition
		{"g1:0", 0, nil, true},                     // no offset
		{"g1:0=", 0, nil, true},                    // empty offset
		{"g1:=5", 0, nil, true},                    // empty partition
		{"g1:0=-1", 0, nil, true},                  // negative offset
		{"g1:-1=0", 0, nil, true},                  // negative partition
		{"g1:+1=0", 0, nil, true},                  // sign
		{"g1:0=+1", 0, nil, true},                  // sign
		{"g1:0=1,0=2", 0, nil, true},               // partition twice
		{"g1:0=1,", 0, nil, true},                  // trailing comma
		{"g1:0=1;1=2", 0, nil, true},               // wrong separator
		{"g1: 0=1", 0, nil, true},                  // space
		{"g1:0=1 ", 0, nil, true},                  // space
		{"g1:0=1x", 0, nil, true},                  // junk
		{"g1:0=0x10", 0, nil, true},                // hex
		{"G1:0=0", 0, nil, true},                   // case
		{"g1:0=1=2", 0, nil, true},                 // two =
		{"g1:2147483648=0", 0, nil, true},          // partition beyond int32
		{"g1:0=9223372036854775808", 0, nil, true}, // offset beyond int64
		{"g2147483648:0=0", 0, nil, true},          // generation beyond int32
		{"g1:0=1:2", 0, nil, true},
		{"g1:" + strings.Repeat("1=1,", MaxIDLength/4) + "0=0", 0, nil, true}, // too long
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			pos, err := Parse(tt.id)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse(%q) = %+v, %v; want ErrMalformed", tt.id, pos, err)
				}
				return
			}
			if err != nil || pos.Generation != tt.gen || !maps.Equal(pos.Next, tt.next) {
				t.Fatalf("Parse(%q) = %+v, %v; want g%d %v", tt.id, pos, err, tt.gen, tt.next)
			}
		})
	}
}

func TestStartAt(t *testing.T) {
	bounds := map[int32]Bounds{
		0: {Oldest: 0, Stable: 10, High: 10},
		1: {Oldest: 5, Stable: 7, High: 9}, // an open transaction at 7..8; records below 5 deleted
		2: {Oldest: 0, Stable: 0, High: 0}, // empty
	}
	pos := func(gen int, next map[int32]int64) *Position { return &Position{gen, next} }
	tests := []struct {
		name          string
		last          *Position
		fromBeginning bool
		want          map[int32]int64
		how           string
		wantErr       bool
	}{
		{"no id: the stable end", nil, false, map[int32]int64{0: 10, 1: 7, 2: 0}, FromEnd, false},
		{"no id, from=beginning", nil, true, map[int32]int64{0: 0, 1: 5, 2: 0}, FromBeginning, false},
		{"resume exactly", pos(3, map[int32]int64{0: 4, 1: 6, 2: 0}), false, map[int32]int64{0: 4, 1: 6, 2: 0}, FromLast, false},
		{"resume wins over from", pos(3, map[int32]int64{0: 4, 1: 6, 2: 0}), true, map[int32]int64{0: 4, 1: 6, 2: 0}, FromLast, false},
		{"resume at the high-water mark", pos(3, map[int32]int64{0: 10, 1: 9, 2: 0}), false, map[int32]int64{0: 10, 1: 9, 2: 0}, FromLast, false},
		{"unlisted partition from its oldest", pos(3, map[int32]int64{0: 4}), false, map[int32]int64{0: 4, 1: 5, 2: 0}, FromLast, false},
		{"below the oldest: the oldest", pos(3, map[int32]int64{0: 4, 1: 2, 2: 0}), false, map[int32]int64{0: 4, 1: 5, 2: 0}, FromLast, false},
		{"another generation: from the beginning", pos(2, map[int32]int64{0: 4, 7: 99}), false, map[int32]int64{0: 0, 1: 5, 2: 0}, FromReset, false},
		{"a later generation too", pos(4, map[int32]int64{0: 4}), false, map[int32]int64{0: 0, 1: 5, 2: 0}, FromReset, false},
		{"beyond the end", pos(3, map[int32]int64{0: 11, 1: 6, 2: 0}), false, nil, "", true},
		{"unknown partition", pos(3, map[int32]int64{0: 1, 3: 0}), false, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, how, err := StartAt(3, bounds, tt.last, tt.fromBeginning)
			if tt.wantErr {
				if !errors.Is(err, ErrForeign) {
					t.Fatalf("StartAt = %+v, %v; want ErrForeign", got, err)
				}
				return
			}
			if err != nil || got.Generation != 3 || how != tt.how || !maps.Equal(got.Next, tt.want) {
				t.Fatalf("StartAt = %+v %q %v; want g3 %v %q", got, how, err, tt.want, tt.how)
			}
		})
	}
	// The result is the stream's own: the caller's id is not changed.
	last := pos(3, map[int32]int64{0: 4})
	got, _, _ := StartAt(3, bounds, last, false)
	got.Next[0] = 99
	if last.Next[0] != 4 || len(last.Next) != 1 {
		t.Fatalf("StartAt changed the id it was given: %v", last.Next)
	}
}

// A stream that delivers records and is resumed from any of its ids
// continues exactly after the last record delivered: the ids and StartAt
// compose to "nothing missed, nothing twice".
func TestResumeComposes(t *testing.T) {
	// Records per partition, as offsets (gaps are transaction markers).
	log := map[int32][]int64{0: {0, 1, 2, 4, 5}, 1: {0, 3}, 2: {}}
	bounds := map[int32]Bounds{0: {0, 6, 6}, 1: {0, 4, 4}, 2: {0, 0, 0}}
	type rec struct {
		p   int32
		off int64
	}
	// One interleaving of the partitions, as a stream delivers them.
	order := []rec{{0, 0}, {1, 0}, {0, 1}, {0, 2}, {1, 3}, {0, 4}, {0, 5}}
	start, _, _ := StartAt(1, bounds, nil, true)
	ids := []string{start.String()}
	cur := start.Clone()
	for _, r := range order {
		cur.Next[r.p] = r.off + 1
		ids = append(ids, cur.String())
	}
	for i, id := range ids {
		last, err := Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		resumed, how, err := StartAt(1, bounds, &last, false)
		if err != nil || how != FromLast {
			t.Fatalf("resume from %q: %v %q", id, err, how)
		}
		// What the resumed stream delivers, plus what was delivered
		// before the id, is every record exactly once.
		seen := map[rec]int{}
		for _, r := range order[:i] {
			seen[r]++
		}
		for p, offs := range log {
			for _, off := range offs {
				if off >= resumed.Next[p] {
					seen[rec{p, off}]++
				}
			}
		}
		for _, r := range order {
			if seen[r] != 1 {
				t.Fatalf("resume from %q (after %d records): record %v seen %d times", id, i, r, seen[r])
			}
		}
	}
}
