package clock

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSkewFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "skew")
	if d := readSkew(path); d != 0 {
		t.Fatalf("missing file: %s", d)
	}
	for _, tt := range []struct {
		text string
		want time.Duration
	}{{"5m\n", 5 * time.Minute}, {"-5m", -5 * time.Minute}, {"", 0}, {"nonsense", 0}} {
		if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		if d := readSkew(path); d != tt.want {
			t.Errorf("%q: %s, want %s", tt.text, d, tt.want)
		}
	}
	set(time.Hour)
	defer set(0)
	if d := time.Until(Now()); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("Now with a skew of 1h is %s ahead", d)
	}
	set(0)
	if d := time.Until(Now()); d > time.Second || d < -time.Second {
		t.Errorf("Now without a skew is %s off", d)
	}
}
