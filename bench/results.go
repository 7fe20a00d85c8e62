package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// results is what a run measured; it is written as JSON, printed as tables and drawn.
type results struct {
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Smoke    bool      `json:"smoke"`
	Machine  machine   `json:"machine"`
	Settings settings  `json:"settings"`

	Seq          []seqRow      `json:"sequential_invoke"`
	Tput         []tputRow     `json:"throughput"`
	Pub          []pubRow      `json:"publish_fanout"`
	Failover     []failoverRow `json:"failover"`
	Blob         []blobRow     `json:"blob_vs_inline"`
	IdleFollower *idleRow      `json:"idle_follower,omitempty"`
	Redis        []redisRow    `json:"redis_incr,omitempty"`
	RedisServer  string        `json:"redis_server,omitempty"`
	Notes        []string      `json:"notes,omitempty"`

	seqSamples map[string][]int64
}

type machine struct {
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	Commit     string `json:"commit,omitempty"`
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
	NodePeer   string `json:"node_peer,omitempty"`
}

type settings struct {
	Rounds      int   `json:"rounds"`
	SeqCalls    int   `json:"seq_calls"`
	TputMs      int   `json:"tput_ms_per_round"`
	Concurrency int   `json:"callers_per_follower"`
	Kills       int   `json:"kills"`
	PubPaced    int   `json:"pub_paced_messages"`
	PubBurst    int   `json:"pub_burst_messages"`
	BlobMiB     []int `json:"blob_mib"`
	HeapMiB     int   `json:"member_heap_mib,omitempty"`
}

type seqRow struct {
	System string  `json:"system"`
	N      int     `json:"n"`
	P50us  float64 `json:"p50_us"`
	P90us  float64 `json:"p90_us"`
	P99us  float64 `json:"p99_us"`
	MaxUs  float64 `json:"max_us"`
	XFloor float64 `json:"p50_x_floor"`
}

type tputRow struct {
	System      string  `json:"system"`
	Clients     int     `json:"clients"`
	Concurrency int     `json:"in_flight_per_client"`
	CallsPerSec float64 `json:"calls_per_s"`
	XFloor      float64 `json:"x_floor"`
	XNode       float64 `json:"x_node,omitempty"`
}

type pubRow struct {
	System      string  `json:"system"`
	Subscribers int     `json:"subscribers"`
	MsgsPerSec  float64 `json:"burst_msgs_per_s_each"`
	Sent        int     `json:"burst_sent"`
	Delivered   int64   `json:"burst_delivered_total"`
	P50us       float64 `json:"paced_p50_us"`
	P99us       float64 `json:"paced_p99_us"`
	PacedLost   int64   `json:"paced_lost"`
	XFloor      float64 `json:"msgs_x_floor"`
}

type failoverRow struct {
	System    string    `json:"system"`
	Kills     int       `json:"kills"`
	P50ms     float64   `json:"all_p50_ms"`
	P99ms     float64   `json:"all_p99_ms"`
	MaxMs     float64   `json:"all_max_ms"`
	FirstP50  float64   `json:"first_p50_ms"`
	XFloor    float64   `json:"p50_x_floor"`
	SamplesMs []float64 `json:"all_ms"`
}

type blobRow struct {
	System string  `json:"system"`
	Mode   string  `json:"mode"`
	MiB    int     `json:"mib"`
	N      int     `json:"n"`
	P50ms  float64 `json:"p50_ms"`
	XRaw   float64 `json:"x_raw_socket"`
}

type idleRow struct {
	Followers int   `json:"followers"`
	BytesEach int64 `json:"leader_heap_and_stack_bytes_each"`
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func newResults(o options, args []string) *results {
	r := &results{
		Command: "go run . " + strings.Join(args[1:], " "),
		Started: time.Now().UTC(),
		Smoke:   o.smoke,
		Settings: settings{Rounds: o.rounds, SeqCalls: o.seqN, TputMs: o.tputMs, Concurrency: o.conc,
			Kills: o.kills, PubPaced: o.pubPaced, PubBurst: o.pubBurst, BlobMiB: o.blobMiB, HeapMiB: o.heapMiB},
		seqSamples: map[string][]int64{},
	}
	r.Command = strings.TrimSpace(r.Command)
	var u unix.Utsname
	_ = unix.Uname(&u)
	r.Machine = machine{CPUs: runtime.NumCPU(), Kernel: unix.ByteSliceToString(u.Release[:]), Go: runtime.Version(), LoadBefore: loadavg()}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		r.Machine.Commit = strings.TrimSpace(string(out))
	}
	return r
}

func (r *results) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *results) finish(started time.Time) {
	r.Seconds = time.Since(started).Seconds()
	r.Machine.LoadAfter = loadavg()
}

// pct is the q-quantile of sorted (nearest rank).
func pct(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

func us(ns int64) float64 { return float64(ns) / 1e3 }
func ms(ns int64) float64 { return float64(ns) / 1e6 }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// floorOf names the floor a system is compared with: raw sockets of its transport
// ("floor/unix batched" is compared with "floor/unix").
func floorOf(system string) string {
	_, tr, _ := strings.Cut(system, "/")
	tr, _, _ = strings.Cut(tr, " ")
	return "floor/" + tr
}

// floorIn is floorOf(system) if names has it, else the Unix floor (when a run skips TCP).
func floorIn(system string, names []string) string {
	if f := floorOf(system); slices.Contains(names, f) {
		return f
	}
	return "floor/unix"
}

func (r *results) addSeq(system string, lat []int64) {
	s := slices.Clone(lat)
	slices.Sort(s)
	r.seqSamples[system] = s
	row := seqRow{System: system, N: len(s), P50us: us(pct(s, .5)), P90us: us(pct(s, .9)), P99us: us(pct(s, .99)), MaxUs: us(pct(s, 1))}
	var names []string
	for _, f := range r.Seq {
		names = append(names, f.System)
	}
	for _, f := range r.Seq {
		if f.System == floorIn(system, names) {
			row.XFloor = ratio(row.P50us, f.P50us)
		}
	}
	if system == floorOf(system) {
		row.XFloor = 1
	}
	r.Seq = append(r.Seq, row)
}

func (r *results) addTput(system string, clients, conc int, perSec float64) {
	row := tputRow{System: system, Clients: clients, Concurrency: conc, CallsPerSec: perSec}
	var names []string
	for _, f := range r.Tput {
		names = append(names, f.System)
	}
	for _, f := range r.Tput {
		if f.System == floorIn(system, names) {
			row.XFloor = ratio(perSec, f.CallsPerSec)
		}
	}
	if system == floorOf(system) {
		row.XFloor = 1
	}
	r.Tput = append(r.Tput, row)
	// Once node is in, the ratio of every cluster row to it.
	for i := range r.Tput {
		for _, n := range r.Tput {
			if n.System == "node/tcp" && strings.HasPrefix(r.Tput[i].System, "cluster/") {
				r.Tput[i].XNode = ratio(r.Tput[i].CallsPerSec, n.CallsPerSec)
			}
		}
	}
}

func (r *results) addPub(system string, pacedN int, paced []response, burstN int, burst []response, t0 int64) {
	var lat []int64
	var pacedGot int64
	for _, p := range paced {
		lat = append(lat, p.Lat...)
		pacedGot += p.Calls
	}
	slices.Sort(lat)
	row := pubRow{System: system, Subscribers: len(burst), Sent: burstN, P50us: us(pct(lat, .5)), P99us: us(pct(lat, .99)),
		PacedLost: int64(pacedN*len(paced)) - pacedGot}
	var last int64
	for _, b := range burst {
		row.Delivered += b.Calls
		last = max(last, b.Last)
	}
	if last > t0 && len(burst) > 0 {
		row.MsgsPerSec = float64(row.Delivered) / float64(len(burst)) / (float64(last-t0) / 1e9)
	}
	var names []string
	for _, f := range r.Pub {
		names = append(names, f.System)
	}
	for _, f := range r.Pub {
		if f.System == floorIn(system, names) {
			row.XFloor = ratio(row.MsgsPerSec, f.MsgsPerSec)
		}
	}
	if system == floorOf(system) {
		row.XFloor = 1
	}
	r.Pub = append(r.Pub, row)
}

func durStats(ds []time.Duration) (s []int64) {
	for _, d := range ds {
		s = append(s, int64(d))
	}
	slices.Sort(s)
	return s
}

func (r *results) addFailover(system string, first, all []time.Duration) {
	f, a := durStats(first), durStats(all)
	row := failoverRow{System: system, Kills: len(a), P50ms: ms(pct(a, .5)), P99ms: ms(pct(a, .99)), MaxMs: ms(pct(a, 1)), FirstP50: ms(pct(f, .5))}
	for _, d := range all {
		row.SamplesMs = append(row.SamplesMs, ms(int64(d)))
	}
	for _, fl := range r.Failover {
		if fl.System == "floor/flock" {
			row.XFloor = ratio(row.P50ms, fl.P50ms)
		}
	}
	if system == "floor/flock" {
		row.XFloor = 1
	}
	r.Failover = append(r.Failover, row)
}

func (r *results) addBlob(system, mode string, mib int, lat []int64) {
	s := slices.Clone(lat)
	slices.Sort(s)
	row := blobRow{System: system, Mode: mode, MiB: mib, N: len(s), P50ms: ms(pct(s, .5))}
	for _, f := range r.Blob {
		if f.System == floorOf(system) && f.MiB == mib && f.Mode == "raw" {
			row.XRaw = ratio(row.P50ms, f.P50ms)
		}
	}
	if mode == "raw" {
		row.XRaw = 1
	}
	r.Blob = append(r.Blob, row)
}

func (r *results) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func x(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

// print writes the tables: every figure with its ratio to the floor of the same run.
func (r *results) print(w io.Writer) {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "\n%s  (%d CPUs, Linux %s, %s, load %s -> %s, %.0f s)\n", r.Command, r.Machine.CPUs, r.Machine.Kernel, r.Machine.Go, r.Machine.LoadBefore, r.Machine.LoadAfter, r.Seconds)
	if r.Machine.NodePeer != "" {
		fmt.Fprintf(tw, "Node.js peer: %s\n", r.Machine.NodePeer)
	}
	// A partial run (-only) prints only the tables it measured.
	if len(r.Seq) > 0 {
		fmt.Fprintf(tw, "\nSequential invoke, 64 B, one Follower (floor: raw ping-pong)\tp50\tp90\tp99\tmax\tp50 x floor\tcalls\n")
		for _, s := range r.Seq {
			fmt.Fprintf(tw, "  %s\t%.1f us\t%.1f us\t%.1f us\t%.0f us\t%s\t%d\n", s.System, s.P50us, s.P90us, s.P99us, s.MaxUs, x(s.XFloor), s.N)
		}
	}
	if len(r.Tput) > 0 {
		fmt.Fprintf(tw, "\nThroughput, 3 Followers x %d callers (floor: raw pipelined, a write per message)\tcalls/s\tx floor\tx node\t\t\t\n", r.Settings.Concurrency)
		for _, t := range r.Tput {
			fmt.Fprintf(tw, "  %s\t%.0f\t%s\t%s\t\t\t\n", t.System, t.CallsPerSec, x(t.XFloor), x(t.XNode))
		}
	}
	if len(r.Pub) > 0 {
		fmt.Fprintf(tw, "\nPublish fan-out to 3 Followers, 64 B\tburst msgs/s each\tx floor\tdelivered\tpaced p50\tpaced p99\tpaced lost\n")
		for _, p := range r.Pub {
			fmt.Fprintf(tw, "  %s\t%.0f\t%s\t%d/%d\t%.1f us\t%.1f us\t%d\n", p.System, p.MsgsPerSec, x(p.XFloor), p.Delivered, p.Sent*p.Subscribers, p.P50us, p.P99us, p.PacedLost)
		}
	}
	if len(r.Failover) > 0 {
		fmt.Fprintf(tw, "\nFailover: SIGKILL of the Leader -> every survivor served by the new one\tp50\tp99\tmax\tx floor\tfirst survivor p50\tkills\n")
		for _, f := range r.Failover {
			fmt.Fprintf(tw, "  %s\t%.2f ms\t%.2f ms\t%.2f ms\t%s\t%.2f ms\t%d\n", f.System, f.P50ms, f.P99ms, f.MaxMs, x(f.XFloor), f.FirstP50, f.Kills)
		}
	}
	if len(r.Blob) > 0 {
		fmt.Fprintf(tw, "\nLarge payload round trip (Follower -> Leader -> Follower)\tp50\tx raw socket\truns\t\t\t\n")
		for _, b := range r.Blob {
			fmt.Fprintf(tw, "  %s %s %d MiB\t%.2f ms\t%s\t%d\t\t\t\n", b.System, b.Mode, b.MiB, b.P50ms, x(b.XRaw), b.N)
		}
	}
	if r.IdleFollower != nil {
		fmt.Fprintf(tw, "\nAn idle Follower costs the Leader (Go heap + stacks, %d joined)\t%.1f KiB\t\t\t\t\t\n", r.IdleFollower.Followers, float64(r.IdleFollower.BytesEach)/1024)
	}
	r.printRedis(tw)
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note: %s\n", n)
	}
	tw.Flush()
	_, _ = w.Write(buf.Bytes())
}
