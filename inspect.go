package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
	"github.com/cluster-client-go/cluster/lock"
)

// An observer looks at a cluster without joining it: it never competes for the lock,
// never builds a Service, never creates Dir or a file, and is not counted as a
// Follower. Inspect, Watch and List are what the clusterctl command is made of.

// observerMaxBody bounds what an observer accepts from the Leader (its status document).
const observerMaxBody = 64 << 20

// observerConfig validates cfg for an observer: Name, Dir, Transport, Port and the peer
// settings count; NewService, Lead and Identity do not.
func observerConfig(cfg Config) (*config, error) {
	cfg.Lead, cfg.NewService = LeadNever, nil
	vc, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if vc.dirMissing {
		return nil, fmt.Errorf("%w: cluster %q: Dir %s does not exist: no leader has run there", ErrNoLeader, vc.Name, vc.Dir)
	}
	return vc, nil
}

// observer is a connection to a Leader as an observer.
type observer struct {
	conn    *ipc.Conn
	welcome frame.Welcome
}

// observe connects to cfg's Leader as an observer. events, if not nil, receives the
// event frames the Leader sends (see Watch). The error says what was found when no
// Leader answers: who holds the lock, whether it is held now, the socket's state.
func observe(ctx context.Context, vc *config, events func(Event)) (*observer, error) {
	tr := newTransport(vc.transport, vc)
	nc, token, err := tr.dial(ctx)
	if err != nil {
		return nil, diagnoseObserver(vc, tr, err)
	}
	hello := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: uint32(pid()), MaxBody: observerMaxBody,
		Name: vc.Name, Token: token, Role: frame.RoleObserver}
	w, err := handshake(ctx, nc, hello, tr)
	switch {
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrLimit), errors.Is(err, ErrProtocol):
		return nil, err // the Leader answered: that is the news
	case err != nil:
		return nil, diagnoseObserver(vc, tr, err)
	}
	opts := ipc.Options{Limits: frame.Limits{MaxBody: observerMaxBody}, Heartbeat: -1}
	if events != nil {
		// A watcher pings: a Leader that stops answering (SIGSTOP, a debugger) is
		// reported as lost after a few seconds instead of never.
		opts.Heartbeat, opts.HeartbeatTimeout = time.Second, 3*time.Second
		opts.Handler = func(_ *ipc.Conn, f frame.Frame) {
			if f.Kind != frame.KindEvent {
				return
			}
			var e Event
			if decodeJSON(f.Body, &e) == nil {
				events(e)
			}
		}
	}
	o := &observer{conn: ipc.NewConn(nc, ipc.PeerCred{}, opts), welcome: w}
	o.conn.Start()
	return o, nil
}

// status asks the Leader for its Status.
func (o *observer) status(ctx context.Context) (*Status, error) {
	f, err := callNoFiles(ctx, o.conn, frame.KindStatus, timeoutMillis(ctx), nil, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cluster: the leader (pid %d, term %d) accepted the connection but did not answer in time: it is stopped (SIGSTOP, a debugger) or busy: %w",
				o.welcome.PID, o.welcome.Term, ctxErr(ctx, "status", o.welcome.Name))
		}
		return nil, fmt.Errorf("cluster: status: %w", err)
	}
	return decodeStatus(f.Body)
}

// diagnoseObserver says what an observer found where no Leader answered.
func diagnoseObserver(vc *config, tr transport, cause error) error {
	var what []string
	if vc.transport == TransportUnix {
		owner, oerr := lock.ReadOwner(vc.lockPath)
		held, known := lock.Held(vc.lockPath)
		switch {
		case errors.Is(oerr, fs.ErrNotExist):
			what = append(what, "no lock file: no member has run here")
		case oerr != nil:
			what = append(what, oerr.Error())
		case known && held:
			state := ""
			if s := owner.State(); s != "" {
				state = ", which is " + s
			}
			what = append(what, fmt.Sprintf("the lock is held (recorded holder: %v%s) but the leader did not answer: it is stopped (SIGSTOP, a debugger), busy, starting or stopping", owner, state))
		case known:
			what = append(what, fmt.Sprintf("the lock is free (last holder: %v): no leader runs now", owner))
		default:
			what = append(what, fmt.Sprintf("last lock holder on record: %v", owner))
		}
		if _, err := os.Lstat(vc.sockPath); errors.Is(err, fs.ErrNotExist) {
			what = append(what, "no socket")
		}
	} else if h := tr.holder(); h != "" {
		what = append(what, h)
	}
	return fmt.Errorf("%w: cluster %q at %s: %s (%w)", ErrNoLeader, vc.Name, tr.where(), strings.Join(what, "; "), cause)
}

// Inspect asks the Leader of the cluster cfg names (Name, Dir, Transport, Port and the
// peer settings count; NewService is not needed) for its Status, as an observer: it
// does not join the cluster, compete for the lock or create anything. When no Leader
// answers within ctx the error matches ErrNoLeader and says what was found; a Leader
// that refuses this process's uid gives ErrUnauthorized.
func Inspect(ctx context.Context, cfg Config) (*Status, error) {
	vc, err := observerConfig(cfg)
	if err != nil {
		return nil, err
	}
	o, err := observe(ctx, vc, nil)
	if err != nil {
		return nil, err
	}
	defer o.conn.Close()
	return o.status(ctx)
}

// Watch reports the cluster's changes to fn until ctx ends, as an observer (see
// Inspect): "leader" when a Leader answers (at once, and after every change of Leader),
// "follower-joined" and "follower-left", "leader-stopping" when the Leader begins to
// hand over, and "no-leader" when it is lost or none answers (then Watch tries again
// every retry). fn runs on one goroutine at a time. Watch returns ctx's error, or an
// error that retrying cannot mend (an invalid Config, a Leader that refuses this uid).
func Watch(ctx context.Context, cfg Config, retry time.Duration, fn func(Event)) error {
	vc, err := observerConfig(cfg)
	if err != nil && !errors.Is(err, ErrNoLeader) {
		return err
	}
	if retry <= 0 {
		retry = 200 * time.Millisecond
	}
	events := make(chan Event, 256)
	lastLost := ""
	for {
		if vc == nil { // Dir did not exist: look again
			vc, err = observerConfig(cfg)
		} else {
			err = nil
		}
		var o *observer
		if err == nil {
			o, err = observe(ctx, vc, func(e Event) {
				select {
				case events <- e:
				case <-ctx.Done():
				}
			})
		}
		if err == nil {
			lastLost = "" // a Leader answered: the next loss is news
			err = watchOne(ctx, o, events, fn)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrConfig) {
			return err
		}
		if msg := errText(err); msg != lastLost { // say it once, not every retry
			lastLost = msg
			fn(Event{Type: "no-leader", At: time.Now(), Name: cfg.Name, Err: msg})
		}
		t := time.NewTimer(retry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// watchOne watches through one observer connection until it ends.
func watchOne(ctx context.Context, o *observer, events chan Event, fn func(Event)) error {
	defer o.conn.Close()
	st, err := o.status(ctx)
	if err != nil {
		return err
	}
	if _, err := callNoFiles(ctx, o.conn, frame.KindWatch, 0, nil, nil); err != nil {
		return fmt.Errorf("cluster: watch: %w", err)
	}
	fn(Event{Type: "leader", At: st.At, Name: st.Name, Leader: &st.Leader})
	for {
		select {
		case e := <-events:
			fn(e)
		case <-o.conn.Done():
			for {
				select { // what arrived before the end comes first
				case e := <-events:
					fn(e)
				default:
					return fmt.Errorf("cluster: the leader (pid %d, term %d) is gone: %w", o.welcome.PID, o.welcome.Term, o.conn.Err())
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ClusterInfo is what List finds about one cluster in a Dir.
type ClusterInfo struct {
	Name string `json:"name"`
	// HolderPID and HolderTerm are the last Leader the lock file records (0: none
	// ever led). The pid is as that Leader saw itself, and may have exited since.
	HolderPID  int    `json:"holder_pid"`
	HolderTerm uint64 `json:"holder_term"`
	// Held says whether some process holds the lock now; HeldKnown whether that could
	// be told (Linux).
	Held      bool `json:"held"`
	HeldKnown bool `json:"held_known"`
	// Socket says whether the Leader's socket file exists.
	Socket bool `json:"socket"`
}

// List returns the clusters whose lock files are in dir (default: the default Dir), by
// name, as the files say: it reads them and never locks, creates or changes anything.
// Whether a Leader answers is Inspect's business.
func List(dir string) ([]ClusterInfo, error) {
	if dir == "" {
		dir = lock.DefaultDir()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: listing %s: %w", dir, err)
	}
	var out []ClusterInfo
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || name == "" || !e.Type().IsRegular() {
			continue
		}
		ci := ClusterInfo{Name: name}
		path := filepath.Join(dir, e.Name())
		if o, err := lock.ReadOwner(path); err == nil {
			ci.HolderPID, ci.HolderTerm = o.PID, o.Term
		}
		ci.Held, ci.HeldKnown = lock.Held(path)
		if fi, err := os.Lstat(filepath.Join(dir, name+".sock")); err == nil && fi.Mode().Type() == fs.ModeSocket {
			ci.Socket = true
		}
		out = append(out, ci)
	}
	slices.SortFunc(out, func(a, b ClusterInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
