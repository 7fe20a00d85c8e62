package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// redisPlot draws the Redis measurement: INCR/s of own and shared side by side for
// each pool size and in-flight count, the shared bar labelled with its ratio to own.
func redisPlot(r *results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Redis INCR from worker processes: own client each vs shared"
	p.Y.Label.Text = "INCR/s"
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	var own, shared plotter.Values
	var names []string
	for _, row := range r.Redis {
		switch row.Mode {
		case "own":
			own = append(own, row.PerSec)
			names = append(names, fmt.Sprintf("%d x %d", row.Workers, row.InFlight))
		case "shared":
			shared = append(shared, row.PerSec)
			names[len(names)-1] += fmt.Sprintf("\n%.2fx", row.XOwnPerSec)
		}
	}
	if len(own) != len(shared) {
		return nil, fmt.Errorf("redis chart: %d own rows and %d shared", len(own), len(shared))
	}
	top := 0.0
	for i := range own {
		top = max(top, own[i], shared[i])
	}
	p.Y.Min, p.Y.Max = 0, top*1.3 // room for the legend above the bars
	w := vg.Points(12)
	for i, bars := range []struct {
		name string
		vs   plotter.Values
		c    color.Color
	}{
		{"own go-redis client each", own, colorOf("floor/unix")},
		{"shared through the Leader", shared, colorOf("cluster/unix")},
	} {
		b, err := plotter.NewBarChart(bars.vs, w)
		if err != nil {
			return nil, err
		}
		b.Color = bars.c
		b.LineStyle.Width = 0
		b.Offset = w * vg.Length(2*i-1) / 2
		p.Add(b)
		p.Legend.Add(bars.name, b)
	}
	p.NominalX(names...)
	p.X.Label.Text = "workers x calls in flight each (shared / own)"
	return p, nil
}
