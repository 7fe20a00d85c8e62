package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
)

// A Leader process for the tests that need one to stop or to run as another uid: the
// test binary re-executed with CLUSTERCTL_TEST_LEADER=<dir>, leading cluster "demo" until
// SIGTERM. It prints "leading" once it leads.
const leaderEnv = "CLUSTERCTL_TEST_LEADER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(leaderEnv); dir != "" {
		os.Exit(leaderMain(dir))
	}
	os.Unsetenv(cluster.TransportEnv) // the tests pin their transport
	goleak.VerifyTestMain(m)
}

func leaderMain(dir string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c, err := cluster.Join(ctx, cluster.Config{Name: "demo", Dir: dir, NewService: newEcho, Lead: cluster.LeadAlways})
	if err != nil {
		fmt.Println("join:", err)
		return 1
	}
	fmt.Println("leading")
	<-ctx.Done()
	_ = c.Close()
	return 0
}

// echo is a Service: "echo" answers its request, topics deliver what is published.
type echo struct {
	mu   sync.Mutex
	subs map[string][]func(cluster.Message)
}

func newEcho(context.Context) (cluster.Service, error) {
	return &echo{subs: map[string][]func(cluster.Message){}}, nil
}

func (e *echo) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method != "echo" {
		return cluster.Message{}, fmt.Errorf("no method %q", method)
	}
	return cluster.Message{Data: bytes.Clone(req.Data)}, nil
}

func (e *echo) Subscribe(_ context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subs[topic] = append(e.subs[topic], emit)
	return func() {}, nil
}

func (e *echo) Publish(_ context.Context, topic string, msg cluster.Message) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, emit := range e.subs[topic] {
		emit(cluster.Message{Data: bytes.Clone(msg.Data)})
	}
	return nil
}

func (e *echo) Close() error { return nil }

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "") // short: socket paths must fit sun_path
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func join(t *testing.T, cfg cluster.Config) *cluster.Client {
	t.Helper()
	if cfg.NewService == nil {
		cfg.NewService = newEcho
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	c, err := cluster.Join(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// status shows the Leader, each Follower and each topic; the observer is not a
// Follower; -json has the documented fields.
func TestStatus(t *testing.T) {
	for _, tr := range []cluster.Transport{cluster.TransportUnix, cluster.TransportTCP} {
		t.Run(tr.String(), func(t *testing.T) {
			dir := tempDir(t)
			cfg := cluster.Config{Name: "demo", Dir: dir, Transport: tr, Identity: "demo/v1"}
			args := []string{"-name", "demo", "-dir", dir, "-transport", tr.String()}
			if tr == cluster.TransportTCP {
				cfg.Port = freePort(t)
				args = append(args, "-port", fmt.Sprint(cfg.Port))
			}
			leader := join(t, cfg)
			f := join(t, cfg)
			ctx := context.Background()
			_, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("x")})
			require.NoError(t, err)
			_, err = f.Subscribe(ctx, "news", func(cluster.Message) {})
			require.NoError(t, err)
			require.NoError(t, f.Publish(ctx, "news", cluster.Message{Data: []byte("hello")}))
			_, err = f.Register(ctx, "workers", cluster.Message{Data: []byte("me")})
			require.NoError(t, err)

			code, out, errOut := ctl(t, append([]string{"status"}, args...)...)
			require.Equal(t, 0, code, errOut)
			t.Logf("clusterctl status:\n%s", out)
			require.Contains(t, out, fmt.Sprintf("leader:    pid %d", os.Getpid()))
			require.Contains(t, out, fmt.Sprintf("term %d", leader.Role().Term))
			require.Contains(t, out, "followers: 1")
			require.Contains(t, out, `identity "demo/v1"`)
			require.Contains(t, out, "news")

			// The Leader counts a request served just after it answers: ask until the
			// four are in (each status document is at most 100 ms old).
			var st cluster.Status
			require.Eventually(t, func() bool {
				code, out, errOut = ctl(t, append([]string{"status", "-json"}, args...)...)
				require.Equal(t, 0, code, errOut)
				require.NoError(t, json.Unmarshal([]byte(out), &st))
				return len(st.Followers) == 1 && st.Followers[0].Served == 4
			}, 30*time.Second, 50*time.Millisecond, "%+v", st)
			require.Equal(t, "demo", st.Name)
			require.Equal(t, tr, st.Transport)
			require.Equal(t, leader.Role().Term, st.Leader.Term)
			require.Len(t, st.Followers, 1, "an observer is not a Follower")
			fi := st.Followers[0]
			require.EqualValues(t, 4, fi.Served) // invoke, subscribe, publish, register
			require.Equal(t, 1, fi.Subscriptions)
			require.Equal(t, 1, fi.Registrations)
			require.Positive(t, fi.BytesIn)
			require.Positive(t, fi.BytesOut)
			require.Len(t, st.Topics, 1)
			require.Equal(t, cluster.TopicInfo{Name: "news", Subscribers: 1, Subscribed: true, LatestBytes: 5, LatestAge: st.Topics[0].LatestAge}, st.Topics[0])
			require.Equal(t, 1, st.Totals.Followers)
			var raw map[string]any
			require.NoError(t, json.Unmarshal([]byte(out), &raw))
			for _, k := range []string{"name", "identity", "library", "protocol", "transport", "address", "at", "leader", "followers", "topics", "totals"} {
				require.Contains(t, raw, k)
			}
			require.Equal(t, tr.String(), raw["transport"])

			// A member's own view of its Leader is the same document.
			fromFollower, err := f.LeaderStatus(ctx)
			require.NoError(t, err)
			require.Equal(t, st.Leader, fromFollower.Leader)
			require.Equal(t, leader.Stats().Followers, 1)
		})
	}
}

// listing names every file in dir, with its mode and size.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d", p, fi.Mode(), fi.Size()))
		return nil
	}))
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// With no Leader, status says what it found and exits 1; a usage error exits 2.
func TestStatusWithoutALeader(t *testing.T) {
	dir := tempDir(t)
	code, _, errOut := ctl(t, "status", "-name", "demo", "-dir", dir)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no lock file: no member has run here")

	// A Leader that left: the lock file stays, free.
	c := join(t, cluster.Config{Name: "demo", Dir: dir})
	require.NoError(t, c.Close())
	code, _, errOut = ctl(t, "status", "-name", "demo", "-dir", dir)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "the lock is free (last holder: pid")

	code, _, errOut = ctl(t, "status", "-dir", dir)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "-name is required")
	code, _, _ = ctl(t, "frobnicate")
	require.Equal(t, 2, code)

	// clusterctl creates nothing, in Dir or elsewhere: not even a missing Dir.
	before := listing(t, dir)
	missing := filepath.Join(dir, "missing")
	code, _, errOut = ctl(t, "status", "-name", "demo", "-dir", missing)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "does not exist")
	require.NoDirExists(t, missing)
	for _, cmd := range []string{"status", "list", "watch"} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		run(ctx, []string{cmd, "-name", "other", "-dir", dir, "-timeout", "100ms"}, io.Discard, io.Discard)
		cancel()
	}
	require.Equal(t, before, listing(t, dir))
}

// list shows every cluster of a Dir, with its Leader or why there is none.
func TestList(t *testing.T) {
	dir := tempDir(t)
	join(t, cluster.Config{Name: "alpha", Dir: dir})
	gone := join(t, cluster.Config{Name: "beta", Dir: dir})
	require.NoError(t, gone.Close())
	code, out, errOut := ctl(t, "list", "-dir", dir)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Contains(t, lines[1], "alpha")
	require.Contains(t, lines[1], fmt.Sprintf("pid %d, term 1", os.Getpid()))
	require.Contains(t, lines[2], "beta")
	require.Contains(t, lines[2], "no leader")

	code, out, _ = ctl(t, "list", "-dir", dir, "-json")
	require.Equal(t, 0, code)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.Len(t, rows, 2)
	require.Equal(t, "alpha", rows[0]["name"])
	require.Equal(t, true, rows[0]["held"])
	require.NotNil(t, rows[0]["leader"])
	require.Equal(t, false, rows[1]["held"])
}

// watch reports the Leader, Followers joining and leaving, the handover and the next
// Leader, one line each.
func TestWatch(t *testing.T) {
	dir := tempDir(t)
	cfg := cluster.Config{Name: "demo", Dir: dir}
	first := join(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var out strings.Builder
	lines := make(chan string, 100)
	w := writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		out.Write(b)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			lines <- l
		}
		return len(b), nil
	})
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"watch", "-name", "demo", "-dir", dir}, w, os.Stderr) }()
	next := func(want string) string {
		t.Helper()
		for {
			select {
			case l := <-lines:
				if strings.Contains(l, want) {
					return l
				}
			case <-time.After(30 * time.Second):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("no %q in:\n%s", want, out.String())
			}
		}
	}
	term := first.Role().Term
	require.Contains(t, next("leader:"), fmt.Sprintf("term %d", term))
	f := join(t, cfg)
	next("follower-joined")
	require.NoError(t, first.Close()) // f takes over
	next("leader-stopping")
	require.Contains(t, next(" leader:"), fmt.Sprintf("term %d", term+1))
	require.Equal(t, cluster.RoleLeader, f.Role().Role)
	cancel()
	require.Equal(t, 0, <-done)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
