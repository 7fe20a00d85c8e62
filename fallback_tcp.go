package cluster

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cluster-client-go/cluster/ipc"
)

// DefaultPort is the loopback port a cluster uses for the TCP transport when
// Config.Port is zero: 20000 plus the FNV-1a hash of the Name modulo 10000, so that
// clusters of different names on one host do not compete for one port, and the port
// stays below Linux's ephemeral range.
func DefaultPort(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return 20000 + int(h.Sum32()%10000)
}

// tcpTransport elects by port competition, as cluster-client does: whoever binds
// 127.0.0.1:Port leads, and that listener is its transport. Anyone on the host can
// connect to a loopback port, so the Leader writes a random token to
// <Dir>/<Name>.token (0600, replaced atomically each term) and admits only Followers
// that present it: being able to read Dir is the credential.
type tcpTransport struct {
	cfg   *config
	ln    net.Listener
	token []byte
}

func (t *tcpTransport) kind() string { return "tcp" }

func (t *tcpTransport) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.cfg.Port))
}

func (t *tcpTransport) tokenPath() string { return filepath.Join(t.cfg.Dir, t.cfg.Name+".token") }

func (t *tcpTransport) claim() (bool, uint64, error) {
	// Loopback only, always: the address is fixed here, not configurable.
	ln, err := net.Listen("tcp", t.addr())
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return false, 0, nil
		}
		return false, 0, fmt.Errorf("binding %s: %w", t.addr(), err)
	}
	rec, _ := readTokenFile(t.tokenPath()) // a missing or damaged file starts at term 0
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		_ = ln.Close()
		return false, 0, err
	}
	next := tokenRecord{term: rec.term + 1, pid: os.Getpid(), token: []byte(hex.EncodeToString(tok))}
	if err := writeTokenFile(t.tokenPath(), next); err != nil {
		_ = ln.Close()
		return false, 0, fmt.Errorf("writing the token file: %w", err)
	}
	t.ln, t.token = ln, next.token
	return true, next.term, nil
}

func (t *tcpTransport) listen() (listener, error) { return tcpListener{t.ln}, nil }

func (t *tcpTransport) release() {
	if t.ln != nil {
		_ = t.ln.Close()
		t.ln, t.token = nil, nil
	}
}

func (t *tcpTransport) dial(ctx context.Context) (net.Conn, []byte, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", t.addr())
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil, fmt.Errorf("%w: nothing listens on %s", ipc.ErrNoListener, t.addr())
		}
		return nil, nil, err
	}
	// Read the token after connecting: a Leader writes it right after binding, so a
	// token read now is at least as new as the listener we reached, or the previous
	// term's (refused, then retried).
	rec, err := readTokenFile(t.tokenPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = nc.Close()
		return nil, nil, err
	}
	return nc, rec.token, nil
}

func (t *tcpTransport) authorize(token []byte) error {
	if len(token) == 0 {
		return fmt.Errorf("no token: a follower must read it from %s", t.tokenPath())
	}
	if subtle.ConstantTimeCompare(token, t.token) != 1 {
		return fmt.Errorf("wrong token: it must match %s of this term", t.tokenPath())
	}
	return nil
}

func (t *tcpTransport) where() string { return t.addr() + " (tcp)" }

func (t *tcpTransport) holder() string {
	if rec, err := readTokenFile(t.tokenPath()); err == nil && rec.pid != 0 {
		return fmt.Sprintf("port %s last taken by pid %d, term %d", t.addr(), rec.pid, rec.term)
	}
	return ""
}

func (t *tcpTransport) peerCredsKnown() bool { return false }

// tcpListener adapts a TCP listener: no peer credentials on TCP.
type tcpListener struct{ net.Listener }

func (l tcpListener) Accept() (net.Conn, ipc.PeerCred, error) {
	c, err := l.Listener.Accept()
	return c, ipc.PeerCred{}, err
}

// tokenRecord is the token file: "term=N pid=P token=HEX\n".
type tokenRecord struct {
	term  uint64
	pid   int
	token []byte
}

func readTokenFile(path string) (tokenRecord, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return tokenRecord{}, err
	}
	if !fi.Mode().IsRegular() {
		return tokenRecord{}, fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return tokenRecord{}, err
	}
	var rec tokenRecord
	for _, field := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "term":
			rec.term, _ = strconv.ParseUint(v, 10, 64)
		case "pid":
			rec.pid, _ = strconv.Atoi(v)
		case "token":
			rec.token = []byte(v)
		}
	}
	return rec, nil
}

// writeTokenFile replaces the token file atomically: a reader sees the old record or
// the new one, never a mix. The file is 0600 from creation.
func writeTokenFile(path string, rec tokenRecord) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := fmt.Fprintf(f, "term=%d pid=%d token=%s\n", rec.term, rec.pid, rec.token)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
	}
	return werr
}
