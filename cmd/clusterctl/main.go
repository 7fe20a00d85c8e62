// Command clusterctl shows what the clusters of a host are doing: who leads, since when,
// which Followers are connected and what they do, which topics are subscribed. It asks
// the Leader over the cluster's own socket as an observer: it never competes for the
// lock, is never counted as a Follower, and creates nothing.
//
//	clusterctl status -name NAME [-dir DIR] [-json]   the Leader, its Followers, its topics
//	clusterctl list [-dir DIR] [-json]                every cluster in DIR, with its Leader
//	clusterctl watch -name NAME [-dir DIR] [-json]    role changes and Followers, live
//
// Every command also takes -transport (auto, unix or tcp), -port, -allow-uid and
// -allow-gid (as the members' Config), and -timeout (status and list: how long to wait
// for a Leader's answer; watch runs until it is interrupted). The exit status is 0 when a
// Leader answered (list: always, unless DIR cannot be read; watch: when interrupted), 1
// when none did (the message says what was found: a free lock, a lock held by a process
// whose socket does not answer, no lock file; watch: when a Leader refuses this uid), and
// 2 on a usage error or a Config the library refuses (cluster.ErrConfig).
// docs/operating.md describes the JSON output.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/cluster-client-go/cluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  clusterctl status -name NAME [-dir DIR] [-json]
  clusterctl list [-dir DIR] [-json]
  clusterctl watch -name NAME [-dir DIR] [-json]
common flags: -transport auto|unix|tcp, -port N, -allow-uid UID,..., -allow-gid GID,..., -timeout D
`

// options are the flags every command takes.
type options struct {
	name, dir, transport string
	port                 int
	uids, gids           string
	json                 bool
	timeout              time.Duration
}

func (o *options) config() (cluster.Config, error) {
	cfg := cluster.Config{Name: o.name, Dir: o.dir, Port: o.port}
	if err := cfg.Transport.UnmarshalText([]byte(o.transport)); err != nil {
		return cfg, err
	}
	var err error
	if cfg.AllowUIDs, err = ids(o.uids); err != nil {
		return cfg, fmt.Errorf("-allow-uid: %w", err)
	}
	if cfg.AllowGIDs, err = ids(o.gids); err != nil {
		return cfg, fmt.Errorf("-allow-gid: %w", err)
	}
	return cfg, nil
}

func ids(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' }) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, err
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// run runs clusterctl with args and returns its exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("clusterctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.name, "name", "", "the cluster's Name (status, watch)")
	fs.StringVar(&o.dir, "dir", "", "the cluster's Dir (default: the members' default Dir)")
	fs.StringVar(&o.transport, "transport", "auto", "the members' transport: auto, unix or tcp")
	fs.IntVar(&o.port, "port", 0, "the TCP transport's port (default: the members' default)")
	fs.StringVar(&o.uids, "allow-uid", "", "uids besides this one that may own Dir, as the members' Config.AllowUIDs")
	fs.StringVar(&o.gids, "allow-gid", "", "groups that share Dir, as the members' Config.AllowGIDs")
	fs.BoolVar(&o.json, "json", false, "print JSON (one document; watch: one event per line)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "how long to wait for a Leader's answer")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clusterctl %s: unexpected arguments %q\n%s", cmd, fs.Args(), usage)
		return 2
	}
	switch cmd {
	case "status", "watch":
		if o.name == "" {
			fmt.Fprintf(stderr, "clusterctl %s: -name is required\n%s", cmd, usage)
			return 2
		}
	case "list":
	default:
		fmt.Fprintf(stderr, "clusterctl: unknown command %q\n%s", cmd, usage)
		return 2
	}
	cfg, err := o.config()
	if err != nil {
		fmt.Fprintf(stderr, "clusterctl %s: %v\n", cmd, err)
		return 2
	}
	switch cmd {
	case "status":
		return status(ctx, cfg, o, stdout, stderr)
	case "list":
		return list(ctx, cfg, o, stdout, stderr)
	}
	return watch(ctx, cfg, o, stdout, stderr)
}

func status(ctx context.Context, cfg cluster.Config, o options, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	st, err := cluster.Inspect(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "clusterctl status: %v\n", err)
		if errors.Is(err, cluster.ErrConfig) {
			return 2
		}
		return 1
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st *cluster.Status) {
	fmt.Fprintf(w, "cluster %s at %s (%s), library %s, protocol %d", st.Name, st.Address, st.Transport, st.Library, st.Protocol)
	if st.Identity != "" {
		fmt.Fprintf(w, ", identity %q", st.Identity)
	}
	fmt.Fprintln(w)
	l := st.Leader
	fmt.Fprintf(w, "leader:    pid %d, uid %d, term %d, leading for %s, process up %s\n",
		l.PID, l.UID, l.Term, ago(st.At, l.Since), ago(st.At, l.Started))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "followers: %d\n", len(st.Followers))
	if len(st.Followers) > 0 {
		fmt.Fprintln(tw, "  PID\tUID\tCONNECTED\tSERVED\tERRORS\tIN FLIGHT\tSUBS\tREGS\tIN\tOUT")
		for _, f := range st.Followers {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", f.PID, uid(f.UID), ago(st.At, f.ConnectedAt),
				f.Served, f.Errors, f.InFlight, f.Subscriptions, f.Registrations, size(f.BytesIn), size(f.BytesOut))
		}
	}
	fmt.Fprintf(tw, "topics:    %d\n", len(st.Topics))
	if len(st.Topics) > 0 {
		fmt.Fprintln(tw, "  NAME\tSUBSCRIBERS\tSHARED\tSERVICE\tLATEST")
		for _, t := range st.Topics {
			latest := "-"
			if t.LatestAge > 0 || t.LatestBytes > 0 {
				latest = fmt.Sprintf("%s, %s ago", size(uint64(t.LatestBytes)), t.LatestAge.Round(time.Millisecond))
			}
			svc := "subscribed"
			if !t.Subscribed {
				svc = "not subscribed"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%s\n", printable(t.Name), t.Subscribers, t.Shared, svc, latest)
		}
	}
	_ = tw.Flush()
	t := st.Totals
	fmt.Fprintf(w, "totals:    %d followers, %d observers, %d subscriptions, %d registrations, %d served, %d errors, %s in, %s out, %d panics",
		t.Followers, t.Observers, t.Subscriptions, t.Registrations, t.Served, t.Errors, size(t.BytesIn), size(t.BytesOut), t.Panics)
	if len(t.Refused) > 0 {
		fmt.Fprintf(w, ", refused %v", t.Refused)
	}
	fmt.Fprintln(w)
}

func list(ctx context.Context, cfg cluster.Config, o options, stdout, stderr io.Writer) int {
	found, err := cluster.List(cfg.Dir)
	if err != nil {
		fmt.Fprintf(stderr, "clusterctl list: %v\n", err)
		return 1
	}
	// Ask each cluster's Leader, all at once: a lock file says who led, not who leads.
	type row struct {
		cluster.ClusterInfo
		Leader *cluster.LeaderInfo `json:"leader"`
		Err    string              `json:"error,omitempty"`
	}
	rows := make([]row, len(found))
	var wg sync.WaitGroup
	for i, ci := range found {
		rows[i].ClusterInfo = ci
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			c.Name = ci.Name
			ictx, cancel := context.WithTimeout(ctx, o.timeout)
			defer cancel()
			if st, err := cluster.Inspect(ictx, c); err == nil {
				rows[i].Leader = &st.Leader
			} else {
				rows[i].Err = err.Error()
			}
		}()
	}
	wg.Wait()
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rows)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLEADER")
	for _, r := range rows {
		leader := "no leader: " + r.Err
		if r.Leader != nil {
			leader = fmt.Sprintf("pid %d, term %d, since %s", r.Leader.PID, r.Leader.Term, r.Leader.Since.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "%s\t%s\n", r.Name, leader)
	}
	_ = tw.Flush()
	return 0
}

func watch(ctx context.Context, cfg cluster.Config, o options, stdout, stderr io.Writer) int {
	enc := json.NewEncoder(stdout)
	err := cluster.Watch(ctx, cfg, 200*time.Millisecond, func(e cluster.Event) {
		if o.json {
			_ = enc.Encode(e)
			return
		}
		fmt.Fprintln(stdout, describe(e))
	})
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(stderr, "clusterctl watch: %v\n", err)
		if errors.Is(err, cluster.ErrConfig) {
			return 2
		}
		return 1
	}
	return 0
}

// describe writes an event as one line.
func describe(e cluster.Event) string {
	at := e.At.Format("15:04:05.000")
	switch {
	case e.Leader != nil:
		return fmt.Sprintf("%s %s: pid %d, term %d", at, e.Type, e.Leader.PID, e.Leader.Term)
	case e.Follower != nil:
		s := fmt.Sprintf("%s %s: pid %d, uid %s", at, e.Type, e.Follower.PID, uid(e.Follower.UID))
		if e.Err != "" {
			s += " (" + printable(e.Err) + ")"
		}
		return s
	case e.Err != "":
		return fmt.Sprintf("%s %s: %s", at, e.Type, printable(e.Err))
	}
	return fmt.Sprintf("%s %s", at, e.Type)
}

// printable returns s as it is when every rune prints, else quoted: topic names and
// error texts come from peers, which must not write to the operator's terminal.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return now.Sub(t).Round(time.Millisecond).String()
}

func uid(n int) string {
	if n < 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

func size(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
