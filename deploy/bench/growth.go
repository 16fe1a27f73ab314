package bench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// GrowthPoint is what one run says about how the services' costs grow
// with the number of profiles: memory, restarts and the cold start.
type GrowthPoint struct {
	// Run names the run: its start (UTC) and size.
	Run      string
	Profiles int
	// RSSAfterLoad and RSSAtEnd are by service (query-svc, command-svc,
	// projector, frontdoor): the largest of its instances, in MiB.
	RSSAfterLoad, RSSAtEnd map[string]float64
	// Restart is restart-to-ready in seconds, by process.
	Restart map[string]float64
	// Load is the cold start: from the start of every service, on empty
	// disks, until the views hold every profile (seconds); Standby is the
	// time after that until the standby views do too.
	Load, Standby float64
	// ConsumeCeiling is ConsumerPerformance's fetch rate in the same run
	// (records/s).
	ConsumeCeiling float64
}

// LoadRate is the cold start in profiles/s.
func (g GrowthPoint) LoadRate() float64 {
	if g.Load <= 0 {
		return 0
	}
	return float64(g.Profiles) / g.Load
}

// GrowthOf returns the growth figures of r.
func GrowthOf(r *Report) GrowthPoint {
	g := GrowthPoint{
		Run: fmt.Sprintf("%s, %s", r.Started.UTC().Format("2006-01-02 15:04"), r.Setup.Size), Profiles: r.Setup.Profiles,
		RSSAfterLoad: map[string]float64{}, RSSAtEnd: map[string]float64{}, Restart: map[string]float64{},
		Load: r.LoadSeconds, Standby: r.StandbySeconds, ConsumeCeiling: r.ConsumeCeiling.FetchThroughput,
	}
	for _, s := range r.RSS {
		kind := serviceOf(s.Proc)
		g.RSSAfterLoad[kind] = max(g.RSSAfterLoad[kind], s.AfterLoadMB)
		g.RSSAtEnd[kind] = max(g.RSSAtEnd[kind], s.AtEndMB)
	}
	for _, s := range r.Restarts {
		g.Restart[s.Proc] = s.ReadySeconds
	}
	return g
}

// serviceOf is "query-svc" for "query-svc-1".
func serviceOf(proc string) string {
	if i := strings.LastIndexByte(proc, '-'); i > 0 {
		return proc[:i]
	}
	return proc
}

// ReadGrowth reads the reports (latest.json files) and returns their
// growth figures, fewest profiles first.
func ReadGrowth(files []string) ([]GrowthPoint, error) {
	var out []GrowthPoint
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Report
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, GrowthOf(&r))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Profiles < out[j].Profiles })
	return out, nil
}

// growthServices are the services of the memory rows, in order.
var growthServices = []string{"query-svc", "command-svc", "projector", "frontdoor"}

// restartProcs are the processes the bench restarts, in order.
func restartProcs(points []GrowthPoint) []string {
	var procs []string
	for _, g := range points {
		for p := range g.Restart {
			if !slices.Contains(procs, p) {
				procs = append(procs, p)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(procs))) // query-svc first
	return procs
}

// GrowthMarkdown is the table of the points, a column per run.
func GrowthMarkdown(points []GrowthPoint) string {
	var b strings.Builder
	b.WriteString("| figure |")
	for _, g := range points {
		fmt.Fprintf(&b, " %s profiles |", fmtInt(g.Profiles))
	}
	b.WriteString("\n|---|")
	for range points {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	row := func(name string, f func(GrowthPoint) string) {
		b.WriteString("| " + name + " |")
		for _, g := range points {
			b.WriteString(" " + f(g) + " |")
		}
		b.WriteString("\n")
	}
	row("run", func(g GrowthPoint) string { return g.Run })
	for _, s := range growthServices {
		row("RSS after the load, "+s+" (MiB, the largest instance)", func(g GrowthPoint) string { return fmtOpt(g.RSSAfterLoad[s], "%.0f") })
		row("RSS at the end, "+s+" (MiB)", func(g GrowthPoint) string { return fmtOpt(g.RSSAtEnd[s], "%.0f") })
	}
	for _, p := range restartProcs(points) {
		row("restart-to-ready, "+p+" (s)", func(g GrowthPoint) string { return fmtOpt(g.Restart[p], "%.2f") })
	}
	row("cold start: every view loaded (s)", func(g GrowthPoint) string { return fmtOpt(g.Load, "%.0f") })
	row("cold start (profiles/s)", func(g GrowthPoint) string { return fmtOpt(g.LoadRate(), "%.0f") })
	row("cold start / ConsumerPerformance", func(g GrowthPoint) string {
		if g.ConsumeCeiling <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.3f", g.LoadRate()/g.ConsumeCeiling)
	})
	row("standby views loaded after that (s)", func(g GrowthPoint) string { return fmtOpt(g.Standby, "%.0f") })
	return b.String()
}

func fmtOpt(v float64, format string) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

func fmtInt(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// GrowthChart draws the points against the number of profiles in three
// panels: RSS after the load by service, restart-to-ready by process, and
// the cold start.
func GrowthChart(points []GrowthPoint, file string) error {
	if len(points) == 0 {
		return fmt.Errorf("growth chart: no runs")
	}
	palette := []color.RGBA{
		{0x1f, 0x77, 0xb4, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xd6, 0x27, 0x28, 0xff},
	}
	panel := func(title, unit string, names []string, value func(GrowthPoint, string) float64) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "profiles (millions)"
		p.Y.Label.Text = unit
		p.Y.Min = 0
		p.Legend.Top, p.Legend.Left = true, true
		for i, name := range names {
			var xy plotter.XYs
			for _, g := range points {
				if v := value(g, name); v > 0 {
					xy = append(xy, plotter.XY{X: float64(g.Profiles) / 1e6, Y: v})
				}
			}
			if len(xy) == 0 {
				continue
			}
			line, scatter, err := plotter.NewLinePoints(xy)
			if err != nil {
				return nil, err
			}
			c := palette[i%len(palette)]
			line.Color, line.Width = c, vg.Points(2)
			scatter.Color, scatter.Shape = c, draw.CircleGlyph{}
			p.Add(line, scatter)
			p.Legend.Add(name, line, scatter)
		}
		return p, nil
	}
	rss, err := panel("RSS after the load", "MiB", growthServices, func(g GrowthPoint, s string) float64 { return g.RSSAfterLoad[s] })
	if err != nil {
		return err
	}
	restart, err := panel("Restart to ready", "seconds", restartProcs(points), func(g GrowthPoint, p string) float64 { return g.Restart[p] })
	if err != nil {
		return err
	}
	cold, err := panel("Cold start, all services at once", "seconds", []string{"every view loaded", "standby views, after that"}, func(g GrowthPoint, s string) float64 {
		if s == "every view loaded" {
			return g.Load
		}
		return g.Standby
	})
	if err != nil {
		return err
	}
	plots := [][]*plot.Plot{{rss, restart, cold}}
	img := vgimg.New(16*vg.Inch, 5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 3, PadX: vg.Points(24), PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8)}
	canvases := plot.Align(plots, tiles, dc)
	for j, p := range plots[0] {
		p.Draw(canvases[0][j])
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
