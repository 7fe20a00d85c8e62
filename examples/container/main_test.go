//go:build linux

package container

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster/examples/internal/exampletest"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logLine is one JSON log line of a replica.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	Host string    `json:"host"`
	PID  int       `json:"pid"`
	Role string    `json:"role"`
	Term uint64    `json:"term"`
	Data string    `json:"data"`
	Err  string    `json:"err"`

	// The upstream's lines.
	Version    int    `json:"version"`
	Subscribed int    `json:"subscribed_connections"`
	Open       int    `json:"open"`
	Ever       int    `json:"ever"`
	MostAtOnce int    `json:"most_at_once"`
	Overlap    string `json:"overlap"`
}

type replica struct {
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []logLine
	done  chan struct{}
}

func (r *replica) has(pred func(logLine) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if pred(l) {
			return true
		}
	}
	return false
}

// role is the replica's latest role and term.
func (r *replica) role() (string, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.lines) - 1; i >= 0; i-- {
		if l := r.lines[i]; l.Msg == "role" {
			return l.Role, l.Term
		}
	}
	return "", 0
}

// TestComposeWithoutAnEngine runs what compose.yaml describes, without a container
// engine: replicas of the worker (built from ./worker) sharing a volume directory, each
// in pid and uts namespaces of its own when the test runs as root (so each is pid 1),
// one of them as another uid that has the shared group as a supplementary group.
// Exactly one replica leads, the upstream sees one connection, a SIGKILLed Leader is
// replaced, and SIGTERM (docker stop) makes every replica exit cleanly.
func TestComposeWithoutAnEngine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the example's replicas are Linux containers")
	}
	up, err := upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	defer up.Close()
	base, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(base)
	vol := filepath.Join(base, "volume")
	require.NoError(t, os.Mkdir(vol, 0o700))
	bin := filepath.Join(base, "worker")
	exampletest.Build(t, "./worker", bin)
	root := os.Geteuid() == 0
	if root {
		// As the image prepares /run/cluster: root:2000, 2770; and a worker other uids may run.
		require.NoError(t, os.Chmod(base, 0o755))
		require.NoError(t, os.Chmod(bin, 0o755))
		require.NoError(t, os.Chown(vol, 0, 2000))
		require.NoError(t, os.Chmod(vol, 0o770|fs.ModeSetgid))
	}

	start := func(name string, cred *syscall.Credential) *replica {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "LOG_FORMAT=json", "CLUSTER_DIR="+vol, "CLUSTER_NAME=demo",
			"UPSTREAM_ADDR="+up.Addr(), "WORK_INTERVAL=20ms")
		if root {
			cmd.Env = append(cmd.Env, "CLUSTER_ALLOW_GIDS=2000")
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS, Credential: cred}
		}
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		r := &replica{name: name, cmd: cmd, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var l logLine
				if json.Unmarshal(sc.Bytes(), &l) == nil {
					r.mu.Lock()
					r.lines = append(r.lines, l)
					r.mu.Unlock()
				}
			}
			_, _ = io.Copy(io.Discard, out)
			_ = cmd.Wait()
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-r.done
		})
		return r
	}
	var rs []*replica
	for i := range 3 {
		rs = append(rs, start(fmt.Sprintf("worker-%d", i+1), &syscall.Credential{Uid: 1000, Gid: 2000}))
	}
	rs = append(rs, start("worker-other-uid", &syscall.Credential{Uid: 1001, Gid: 1001, Groups: []uint32{2000}}))

	// settled waits until exactly one replica leads a term after old, every other
	// follows it, and every replica has called the upstream since; it returns the Leader.
	settled := func(rs []*replica, old uint64) (*replica, uint64) {
		t.Helper()
		var leader *replica
		var term uint64
		var two string
		require.Eventually(t, func() bool {
			leader, term = nil, 0
			for _, r := range rs {
				role, tm := r.role()
				if role == "leader" {
					if leader != nil {
						two = leader.name + " and " + r.name
						return true
					}
					leader, term = r, tm
				}
			}
			if leader == nil || term <= old {
				return false
			}
			for _, r := range rs {
				if role, tm := r.role(); r != leader && (role != "follower" || tm != term) {
					return false
				}
				if !r.has(func(l logLine) bool { return l.Msg == "incr" && l.Term == term }) {
					return false
				}
			}
			return true
		}, 30*time.Second, 5*time.Millisecond)
		require.Empty(t, two, "two leaders at once")
		return leader, term
	}
	leader, term := settled(rs, 0)
	if root {
		for _, r := range rs {
			require.True(t, r.has(func(l logLine) bool { return l.Msg == "joined" && l.PID == 1 }), "%s is not pid 1 in its namespace", r.name)
		}
	}
	require.Equal(t, 1, up.MaxConns(), "the upstream saw more than one connection at once")

	// A replica dies outright (a crashed container): another takes over.
	require.NoError(t, leader.cmd.Process.Signal(syscall.SIGKILL))
	<-leader.done
	var rest []*replica
	for _, r := range rs {
		if r != leader {
			rest = append(rest, r)
		}
	}
	settled(rest, term)

	// docker stop: SIGTERM to each replica's pid 1; each closes its Client and exits 0.
	for _, r := range rest {
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGTERM))
	}
	for _, r := range rest {
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not exit after SIGTERM", r.name)
		}
		require.Equal(t, 0, r.cmd.ProcessState.ExitCode(), "%s", r.name)
		require.True(t, r.has(func(l logLine) bool { return l.Msg == "closed" }), "%s did not close its Client", r.name)
	}
	_, err = os.Lstat(filepath.Join(vol, "demo.lock"))
	require.NoError(t, err, "the lock file must stay on the volume")
}
