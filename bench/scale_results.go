package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// scaleRow is one system at one N of the scaling measurement.
type scaleRow struct {
	System   string  `json:"system"`
	N        int     `json:"followers"`
	Kills    int     `json:"kills"`
	AllP50   float64 `json:"all_p50_ms"`
	AllP99   float64 `json:"all_p99_ms"`
	FirstP50 float64 `json:"first_p50_ms"`
	FirstP99 float64 `json:"first_p99_ms"`
	FanP50   float64 `json:"fanout_p50_ms"`      // the median over messages of the median subscriber's delivery
	FanLast  float64 `json:"fanout_last_p50_ms"` // ... of the last subscriber's
	RSSMiB   float64 `json:"leader_rss_mib"`
	XAll     float64 `json:"all_p50_x_floor,omitempty"`
	XFirst   float64 `json:"first_p50_x_floor,omitempty"`
	XFanLast float64 `json:"fanout_last_x_floor,omitempty"`
	// What a failover cost, medians over the kills: the CPU time the next Leader and
	// the other survivors (together) ran, and the time they waited for a CPU.
	LeaderCPUms  float64   `json:"leader_cpu_ms"`
	LeaderWaitms float64   `json:"leader_runqueue_ms"`
	OthersCPUms  float64   `json:"survivors_cpu_ms"`
	OthersWaitms float64   `json:"survivors_runqueue_ms"`
	Load         string    `json:"loadavg"`
	AllMs        []float64 `json:"all_ms"`
	FirstMs      []float64 `json:"first_ms"`
}

func quantMs(ds []time.Duration, q float64) float64 {
	s := durStats(ds)
	return ms(pct(s, q))
}

func (r *results) addScale(system string, n int, load string, s *scaleSample) {
	if s == nil {
		return
	}
	row := scaleRow{System: system, N: n, Kills: len(s.all), Load: load,
		AllP50: quantMs(s.all, 0.5), AllP99: quantMs(s.all, 0.99),
		FirstP50: quantMs(s.first, 0.5), FirstP99: quantMs(s.first, 0.99),
		FanP50: quantMs(s.fanP50, 0.5), FanLast: quantMs(s.fanLast, 0.5)}
	rss := slices.Clone(s.rss)
	slices.Sort(rss)
	row.RSSMiB = float64(pct(rss, 0.5)) / 1024
	for i := range s.all {
		row.AllMs = append(row.AllMs, ms(int64(s.all[i])))
		row.FirstMs = append(row.FirstMs, ms(int64(s.first[i])))
	}
	med := func(f func(cpuUse) int64) float64 {
		var v []int64
		for _, c := range s.cpu {
			v = append(v, f(c))
		}
		slices.Sort(v)
		return ms(pct(v, 0.5))
	}
	row.LeaderCPUms, row.LeaderWaitms = med(func(c cpuUse) int64 { return c.leader.run }), med(func(c cpuUse) int64 { return c.leader.wait })
	row.OthersCPUms, row.OthersWaitms = med(func(c cpuUse) int64 { return c.others.run }), med(func(c cpuUse) int64 { return c.others.wait })
	r.Scale = append(r.Scale, row)
	// Ratios to the floor of the same transport at the same N (measured before it).
	for i := range r.Scale {
		f := &r.Scale[i]
		for _, fl := range r.Scale {
			if fl.N == f.N && fl.System == floorOf(f.System) {
				f.XAll, f.XFirst, f.XFanLast = ratio(f.AllP50, fl.AllP50), ratio(f.FirstP50, fl.FirstP50), ratio(f.FanLast, fl.FanLast)
			}
		}
	}
}

func (r *results) printScale(w io.Writer) {
	if len(r.Scale) == 0 {
		return
	}
	fmt.Fprintf(w, "\nScaling: SIGKILL of the Leader with N Followers (floor: blocking flock, inotify, raw reconnect)\tN\tall p50\tall p99\tx floor\tfirst p50\tfirst p99\tx floor\tfan-out p50\tlast\tx floor\tleader RSS\tCPU: leader\tsurvivors\twait: leader\tsurvivors\tkills\tload\n")
	for _, s := range r.Scale {
		fmt.Fprintf(w, "  %s\t%d\t%.2f ms\t%.2f ms\t%s\t%.2f ms\t%.2f ms\t%s\t%.2f ms\t%.2f ms\t%s\t%.1f MiB\t%.1f ms\t%.1f ms\t%.1f ms\t%.1f ms\t%d\t%s\n",
			s.System, s.N, s.AllP50, s.AllP99, x(s.XAll), s.FirstP50, s.FirstP99, x(s.XFirst), s.FanP50, s.FanLast, x(s.XFanLast), s.RSSMiB,
			s.LeaderCPUms, s.OthersCPUms, s.LeaderWaitms, s.OthersWaitms, s.Kills, s.Load)
	}
}

// scalePlot draws failover time against the number of Followers, log-log: every
// survivor served (solid) and the first (dashed), for each system.
func scalePlot(r *results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Failover with N Follower processes (p50)"
	p.X.Label.Text = "Followers (log scale)"
	p.Y.Label.Text = "after SIGKILL of the Leader (ms, log scale)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = ticks125{}, ticks125{}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	var systems []string
	for _, s := range r.Scale {
		if !slices.Contains(systems, s.System) {
			systems = append(systems, s.System)
		}
	}
	for _, sys := range systems {
		var all, first plotter.XYs
		for _, s := range r.Scale {
			if s.System == sys {
				all = append(all, plotter.XY{X: float64(s.N), Y: max(s.AllP50, 0.01)})
				first = append(first, plotter.XY{X: float64(s.N), Y: max(s.FirstP50, 0.01)})
			}
		}
		for i, xys := range []plotter.XYs{all, first} {
			l, pts, err := plotter.NewLinePoints(xys)
			if err != nil {
				return nil, err
			}
			l.Color, pts.Color = colorOf(sys), colorOf(sys)
			l.Width = vg.Points(1.6)
			if i == 1 {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
			} else {
				p.Legend.Add(sys+" (dashed: first survivor)", l)
			}
			p.Add(l, pts)
		}
	}
	return p, nil
}
