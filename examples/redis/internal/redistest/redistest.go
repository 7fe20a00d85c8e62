// Package redistest runs a private redis-server on a loopback port for the tests and
// benchmarks of this module, and reads what that server sees (CLIENT LIST).
//
// Start skips the calling test when no redis-server binary is installed, saying how to
// install one, unless the environment variable RequireEnv is set (CI sets it after
// installing the package), in which case a missing binary fails the test.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
)

// RequireEnv, when set to any non-empty value, turns a missing redis-server into a
// test failure instead of a skip.
const RequireEnv = "SHAREDREDIS_REQUIRE_REDIS"

// startTimeout bounds how long a new redis-server may take to answer PING.
const startTimeout = 30 * time.Second

// Server is a redis-server listening on 127.0.0.1 only, with no persistence, its
// files in a temporary directory. Stop it with Close (Start registers that with the
// test's Cleanup).
type Server struct {
	// Addr is the server's 127.0.0.1:port.
	Addr string
	// Port is Addr's port.
	Port int

	mu   sync.Mutex
	proc *process // the current redis-server
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	dir    string
	out    *syncBuffer // redis-server's stdout and stderr
	exited chan struct{}
	once   sync.Once
}

// Binary returns the path of redis-server, or an error saying how to install it.
// redis-cli, which the tests also run, must be installed too.
func Binary() (string, error) {
	const install = "(Debian/Ubuntu: apt-get install -y redis-server; .ci/run installs it)"
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return "", errors.New("redis-cli is not installed " + install)
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server is not installed " + install)
	}
	return p, nil
}

// Start starts a redis-server on a free loopback port and waits until it answers PING.
// It skips tb when redis-server is missing (fails it if RequireEnv is set), and fails
// tb if the server does not start.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			tb.Fatalf("%v, and %s is set", err, RequireEnv)
		}
		tb.Skipf("skipped: %v", err)
	}
	// The port is found free and then handed to redis-server, so another process may
	// take it in between: retry with another port.
	var lastErr error
	for range 3 {
		s, err := start(bin)
		if err == nil {
			tb.Cleanup(func() { s.Close() })
			return s
		}
		lastErr = err
	}
	tb.Fatalf("redistest: %v", lastErr)
	return nil
}

func start(bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := run(bin, port)
	if err != nil {
		return nil, err
	}
	return &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, proc: p}, nil
}

// run starts redis-server on port and waits until it answers PING.
func run(bin string, port int) (*process, error) {
	dir, err := os.MkdirTemp("", "redis")
	if err != nil {
		return nil, err
	}
	p := &process{dir: dir, out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--loglevel", "warning",
		"--logfile", "",
	)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(addr)
		if err == nil {
			return p, nil
		}
		select {
		case <-p.exited:
			p.stop()
			return nil, fmt.Errorf("redis-server on port %d exited at start: %s", port, strings.TrimSpace(p.out.String()))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("redis-server on port %d did not answer PING within %v: %v; its output: %s", port, startTimeout, err, p.out.String())
		}
	}
}

// stop ends the process (SIGTERM, then SIGKILL after 10 s) and removes its directory.
func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		os.RemoveAll(p.dir)
	})
}

// Restart stops the server and starts it again on the same port, empty (there is no
// persistence): every connection to it breaks.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc.stop()
	deadline := time.Now().Add(startTimeout)
	for {
		// The port was just released: should another process take it meanwhile,
		// retrying is all there is to do.
		p, err := run(bin, s.Port)
		if err == nil {
			s.proc = p
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: restarting on port %d: %v", s.Port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops the server and removes its directory. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc.stop()
}

// CLI runs redis-cli against the server with args and returns its trimmed output.
func (s *Server) CLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Client is one line of CLIENT LIST.
type Client struct {
	ID, Name, Addr, Cmd string
	// Sub and PSub count the connection's channel and pattern subscriptions.
	Sub, PSub int
	// Fields has every field of the line.
	Fields map[string]string
}

// ParseClientList parses the reply of CLIENT LIST.
func ParseClientList(reply string) []Client {
	var out []Client
	sc := bufio.NewScanner(strings.NewReader(reply))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		c := Client{Fields: map[string]string{}}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			c.Fields[k] = v
		}
		c.ID, c.Name, c.Addr, c.Cmd = c.Fields["id"], c.Fields["name"], c.Fields["addr"], c.Fields["cmd"]
		c.Sub, _ = strconv.Atoi(c.Fields["sub"])
		c.PSub, _ = strconv.Atoi(c.Fields["psub"])
		out = append(out, c)
	}
	return out
}

// Clients returns the server's connections as CLIENT LIST reports them, less the
// connection that asked (a short-lived redis-cli).
func (s *Server) Clients(ctx context.Context) ([]Client, error) {
	out, err := s.CLI(ctx, "CLIENT", "LIST")
	if err != nil {
		return nil, err
	}
	var others []Client
	for _, c := range ParseClientList(out) {
		if c.Cmd != "client|list" {
			others = append(others, c)
		}
	}
	return others, nil
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a process's stdout
// and stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// leakGrace is how long goroutines may take to end after the tests: go-redis's dial
// prober (pool.tryDial, started after failed dials) sleeps a second between probes and
// sees that its pool was closed only when it wakes.
const leakGrace = 5 * time.Second

// VerifyTestMain runs the tests and then fails the run if goroutines are still alive
// leakGrace after they ended (goleak.Find), like goleak.VerifyTestMain but with that
// grace.
func VerifyTestMain(m *testing.M) {
	// The packages' clusters share a name (and over TCP its default port), and run at
	// once: they keep to the default transport, Unix, whatever the environment says.
	os.Unsetenv(cluster.TransportEnv)
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(leakGrace)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines still running %v after the tests: %v\n", leakGrace, err)
			code = 1
		}
	}
	os.Exit(code)
}
