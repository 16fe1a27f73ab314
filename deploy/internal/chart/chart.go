// Package chart draws small line charts as PNG, in pure Go: one panel per
// quantity, stacked, sharing the x axis (a sample index, e.g. minutes).
// It serves the soak test's report.
package chart

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one line: a value per sample (NaN: none).
type Series struct {
	Name string
	Y    []float64
}

// Panel is one chart of some series with a common unit.
type Panel struct {
	Title  string
	Series []Series
}

const (
	width   = 960
	panelH  = 220
	marginL = 70
	marginR = 200 // the legend
	marginT = 22
	marginB = 22
)

// Palette colours the series of a panel in turn.
var Palette = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
	{188, 189, 34, 255}, {23, 190, 207, 255}, {0, 0, 0, 255}, {90, 90, 200, 255},
}

var (
	background = color.RGBA{255, 255, 255, 255}
	axis       = color.RGBA{60, 60, 60, 255}
	grid       = color.RGBA{225, 225, 225, 255}
)

// Draw writes a PNG of the panels, one under the other, with n samples
// on the x axis labelled xLabel.
func Draw(w io.Writer, title, xLabel string, n int, panels []Panel) error {
	img := image.NewRGBA(image.Rect(0, 0, width, 30+len(panels)*panelH))
	draw.Draw(img, img.Bounds(), &image.Uniform{background}, image.Point{}, draw.Src)
	text(img, 10, 18, title, axis)
	for i, p := range panels {
		panel(img, image.Rect(0, 30+i*panelH, width, 30+(i+1)*panelH), p, n, xLabel)
	}
	return png.Encode(w, img)
}

func panel(img *image.RGBA, r image.Rectangle, p Panel, n int, xLabel string) {
	plot := image.Rect(r.Min.X+marginL, r.Min.Y+marginT, r.Max.X-marginR, r.Max.Y-marginB)
	lo, hi := 0.0, 0.0
	for _, s := range p.Series {
		for _, y := range s.Y {
			if !math.IsNaN(y) && !math.IsInf(y, 0) {
				hi = math.Max(hi, y)
				lo = math.Min(lo, y)
			}
		}
	}
	if hi == lo {
		hi = lo + 1
	}
	hi += (hi - lo) * 0.05
	text(img, plot.Min.X, r.Min.Y+15, p.Title, axis)
	for k := 0; k <= 4; k++ {
		y := plot.Max.Y - k*plot.Dy()/4
		hline(img, plot.Min.X, plot.Max.X, y, grid)
		text(img, r.Min.X+4, y+4, short(lo+(hi-lo)*float64(k)/4), axis)
	}
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, axis)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, axis)
	xOf := func(i int) int {
		if n <= 1 {
			return plot.Min.X
		}
		return plot.Min.X + i*plot.Dx()/(n-1)
	}
	step := max(1, n/10)
	for i := 0; i < n; i += step {
		vline(img, xOf(i), plot.Max.Y, plot.Max.Y+4, axis)
		text(img, xOf(i)-3, plot.Max.Y+16, fmt.Sprint(i), axis)
	}
	text(img, plot.Max.X+10, plot.Max.Y+16, xLabel, axis)
	for si, s := range p.Series {
		c := Palette[si%len(Palette)]
		yOf := func(v float64) int { return plot.Max.Y - int(math.Round((v-lo)/(hi-lo)*float64(plot.Dy()))) }
		prevOK := false
		var px, py int
		for i, v := range s.Y {
			if i >= n || math.IsNaN(v) || math.IsInf(v, 0) {
				prevOK = false
				continue
			}
			x, y := xOf(i), yOf(v)
			if prevOK {
				line(img, px, py, x, y, c)
			} else {
				dot(img, x, y, c)
			}
			px, py, prevOK = x, y, true
		}
		ly := plot.Min.Y + 4 + si*14
		for d := 0; d < 3; d++ {
			hline(img, plot.Max.X+10, plot.Max.X+30, ly+d, c)
		}
		text(img, plot.Max.X+36, ly+6, s.Name, axis)
	}
}

// short formats an axis value.
func short(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func dot(img *image.RGBA, x, y int, c color.Color) {
	for dx := -1; dx <= 1; dx++ {
		for dy := -1; dy <= 1; dy++ {
			img.Set(x+dx, y+dy, c)
		}
	}
}

// line draws a 2-pixel line (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}

func sign(a int) int {
	switch {
	case a < 0:
		return -1
	case a > 0:
		return 1
	}
	return 0
}
