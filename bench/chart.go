package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// palette gives each system the same colour in every panel.
var palette = map[string]color.Color{
	"floor/unix":   color.RGBA{0x55, 0x55, 0x55, 0xff},
	"floor/tcp":    color.RGBA{0xaa, 0xaa, 0xaa, 0xff},
	"floor/flock":  color.RGBA{0x55, 0x55, 0x55, 0xff},
	"cluster/unix": color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	"cluster/tcp":  color.RGBA{0x6b, 0xae, 0xd6, 0xff},
	"grpc/unix":    color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	"node/tcp":     color.RGBA{0xd6, 0x27, 0x28, 0xff},
}

func colorOf(system string) color.Color {
	if c, ok := palette[system]; ok {
		return c
	}
	return color.Black
}

// writeChart draws up to three panels to an SVG file (PNG if path ends in .png): the
// distribution of sequential invoke latency of every system (a CDF on a log scale),
// failover times, and the Redis pool's INCR/s, own vs shared. A run that measured
// none of them (see -only) draws nothing and reports false.
func writeChart(r *results, path string) (bool, error) {
	var panels []*plot.Plot
	if len(r.seqSamples) > 0 {
		lat, err := latencyPlot(r)
		if err != nil {
			return false, err
		}
		panels = append(panels, lat)
	}
	if len(r.Failover) > 0 {
		fo, err := failoverPlot(r)
		if err != nil {
			return false, err
		}
		panels = append(panels, fo)
	}
	if len(r.Redis) > 0 {
		rp, err := redisPlot(r)
		if err != nil {
			return false, err
		}
		panels = append(panels, rp)
	}
	if len(panels) == 0 {
		return false, nil
	}
	w, h := 15*vg.Centimeter*vg.Length(len(panels)), 11*vg.Centimeter
	var img interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if strings.HasSuffix(path, ".png") {
		img = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(144), vgimg.UseBackgroundColor(color.White))}
	} else {
		img = vgsvg.New(w, h)
	}
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Centimeter, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return false, err
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return false, err
	}
	return true, f.Close()
}

func latencyPlot(r *results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Sequential invoke, 64 B: latency distribution"
	p.X.Label.Text = "round trip (µs, log scale)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = ticks125{}
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	for _, row := range r.Seq {
		s := r.seqSamples[row.System]
		if len(s) == 0 {
			continue
		}
		const points = 400
		var xys plotter.XYs
		for i := 0; i <= points; i++ {
			q := float64(i) / points
			v := math.Max(us(pct(s, q)), 1)
			xys = append(xys, plotter.XY{X: v, Y: q * 100})
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color = colorOf(row.System)
		l.Width = vg.Points(1.6)
		if row.System == "floor/tcp" || row.System == "cluster/tcp" {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s  p50 %.0f µs (%.2fx)", row.System, row.P50us, row.XFloor), l)
	}
	return p, nil
}

func failoverPlot(r *results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Failover after SIGKILL of the Leader (%d kills)", r.Settings.Kills)
	p.Y.Label.Text = "until every survivor is served (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = ticks125{}
	p.Add(plotter.NewGrid())
	var names []string
	for i, row := range r.Failover {
		var vs plotter.Values
		for _, v := range row.SamplesMs {
			vs = append(vs, math.Max(v, 0.01))
		}
		if len(vs) == 0 {
			continue
		}
		s, err := plotter.NewScatter(jitter(float64(i), vs))
		if err != nil {
			return nil, err
		}
		s.Color = colorOf(row.System)
		s.Radius = vg.Points(2)
		p.Add(s)
		bp, err := plotter.NewBoxPlot(vg.Points(28), float64(i), vs)
		if err != nil {
			return nil, err
		}
		bp.BoxStyle.Color = colorOf(row.System)
		bp.MedianStyle.Color = colorOf(row.System)
		bp.MedianStyle.Width = vg.Points(2)
		p.Add(bp)
		label := row.System
		if row.System == "floor/flock" {
			label = "flock floor"
		}
		names = append(names, fmt.Sprintf("%s\np50 %.1f ms", label, row.P50ms))
	}
	p.NominalX(names...)
	return p, nil
}

// jitter spreads the points of one column sideways so that equal values stay visible.
func jitter(x float64, vs plotter.Values) plotter.XYs {
	xys := make(plotter.XYs, len(vs))
	for i, v := range vs {
		xys[i] = plotter.XY{X: x - 0.25 + 0.5*float64(i%7)/6, Y: v}
	}
	return xys
}

// ticks125 labels a log axis at 1, 2 and 5 times the powers of ten, so that a range
// within one decade still has labels.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ts
}
