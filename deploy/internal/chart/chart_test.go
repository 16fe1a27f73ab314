package chart

import (
	"bytes"
	"image/png"
	"math"
	"testing"
)

// The chart is a PNG of the right size whose series are drawn in their
// colours where their values are, and not elsewhere.
func TestDraw(t *testing.T) {
	var b bytes.Buffer
	panels := []Panel{
		{Title: "rising", Series: []Series{{Name: "a", Y: []float64{0, 1, 2, 3, 4}}}},
		{Title: "flat, with a gap", Series: []Series{{Name: "b", Y: []float64{5, 5, math.NaN(), 5, 5}}, {Name: "c", Y: []float64{0, 0, 0, 0, 0}}}},
	}
	if err := Draw(&b, "test", "minute", 5, panels); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Dy(); got != 30+2*panelH {
		t.Fatalf("height %d, want %d", got, 30+2*panelH)
	}
	is := func(x, y int, want [3]uint8) bool {
		r, g, bl, _ := img.At(x, y).RGBA()
		return uint8(r>>8) == want[0] && uint8(g>>8) == want[1] && uint8(bl>>8) == want[2]
	}
	blue := [3]uint8{Palette[0].R, Palette[0].G, Palette[0].B}
	orange := [3]uint8{Palette[1].R, Palette[1].G, Palette[1].B}
	// Panel 0: the rising line starts at the bottom left of the plot and
	// ends at the top right (below the 5% headroom).
	x0, x1 := marginL, width-marginR
	top0, bottom0 := 30+marginT, 30+panelH-marginB
	if !is(x0, bottom0, blue) {
		t.Error("the rising series does not start at the bottom left")
	}
	found := false
	for y := top0; y < top0+panelH/5; y++ {
		found = found || is(x1, y, blue)
	}
	if !found {
		t.Error("the rising series does not end near the top right")
	}
	if is(x1, bottom0-2, blue) {
		t.Error("the rising series is drawn at the bottom right")
	}
	// Panel 1: the gap leaves the middle sample empty.
	xm := x0 + 2*(x1-x0)/4
	var inGap, zero bool
	for y := 30 + panelH; y < 30+2*panelH; y++ {
		inGap = inGap || is(xm, y, blue)
		zero = zero || is(xm, y, orange)
	}
	if inGap {
		t.Error("a NaN sample was drawn")
	}
	if !zero {
		t.Error("the second series of a panel is not drawn in the second colour")
	}
}
