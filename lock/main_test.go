package lock_test

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster/lock"
)

// The test binary doubles as the helper process for tests that need the lock held by
// another process (the os/exec exec_test.go style): with helperEnv set, TestMain runs the
// named helper instead of the tests.
const (
	helperEnv     = "LOCK_TEST_HELPER"
	helperPathEnv = "LOCK_TEST_PATH"
)

// helpers are the roles a helper process can play, by name.
var helpers = map[string]func(path string) int{
	"hold": helperHold,
}

// helpersUsed records which roles the tests started, so that a full run fails when a
// registered role is never exercised.
var (
	helpersMu   sync.Mutex
	helpersUsed = map[string]bool{}
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "lock test helper: unknown role %q\n", name)
			os.Exit(2)
		}
		os.Exit(fn(os.Getenv(helperPathEnv)))
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if code == 0 && fullRun() {
			helpersMu.Lock()
			for name := range helpers {
				if !helpersUsed[name] {
					fmt.Fprintf(os.Stderr, "FAIL: helper role %q is registered but no test used it\n", name)
					code = 1
				}
			}
			helpersMu.Unlock()
		}
		os.Exit(code)
	}))
}

// fullRun reports whether every test ran (no -test.run or -test.skip filter).
func fullRun() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

// helperHold takes the lock at path, prints "locked <term>" (or "busy" when it is held),
// then holds it until stdin closes or the process is killed.
func helperHold(path string) int {
	l := lock.New(path)
	won, err := l.TryLock()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if !won {
		fmt.Println("busy")
		return 3
	}
	fmt.Printf("locked %d\n", l.Term())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := l.Unlock(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperProc is a running helper process.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	line  string // its first line of output
	once  sync.Once
	err   error
}

// wait reaps the process once and returns its exit error.
func (h *helperProc) wait() error {
	h.once.Do(func() { h.err = h.cmd.Wait() })
	return h.err
}

// startHelper runs the helper role name on path and waits for its first output line. The
// process is killed and reaped at cleanup if the test has not done so.
func startHelper(t *testing.T, name, path string) *helperProc {
	t.Helper()
	helpersMu.Lock()
	helpersUsed[name] = true
	helpersMu.Unlock()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name, helperPathEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &helperProc{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = h.wait()
	})

	// A helper that never answers is killed, which ends the read below with EOF.
	watchdog := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	watchdog.Stop()
	require.NoError(t, err, "helper %q printed nothing", name)
	h.line = strings.TrimSpace(line)
	return h
}

// startHolder starts a helper process that holds the lock at path and returns it with the
// term it won.
func startHolder(t *testing.T, path string) (*helperProc, uint64) {
	t.Helper()
	h := startHelper(t, "hold", path)
	word, num, ok := strings.Cut(h.line, " ")
	require.True(t, ok && word == "locked", "helper said %q, want \"locked <term>\"", h.line)
	term, err := strconv.ParseUint(num, 10, 64)
	require.NoError(t, err)
	return h, term
}

// tempDir returns a new short-named directory removed at cleanup.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// lockPath returns a lock path in a new temporary directory.
func lockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(tempDir(t), "test.lock")
}

// mustWin takes l and registers its release at cleanup.
func mustWin(t *testing.T, l *lock.Lock) {
	t.Helper()
	won, err := l.TryLock()
	require.NoError(t, err)
	require.True(t, won, "TryLock lost on %s", l.Path())
	t.Cleanup(func() { _ = l.Unlock() })
}

// mustLose checks that l cannot take the lock.
func mustLose(t *testing.T, l *lock.Lock) {
	t.Helper()
	won, err := l.TryLock()
	require.NoError(t, err)
	require.False(t, won, "TryLock won on %s, which should be held", l.Path())
	require.False(t, l.Locked())
}
