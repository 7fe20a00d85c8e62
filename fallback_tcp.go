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
	"github.com/cluster-client-go/cluster/lock"
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
// <Dir>/<Name>.token (0600, or 0640 in Dir's group with Config.AllowGIDs; replaced
// atomically each term) and admits only Followers that present it: being able to read
// Dir is the credential.
//
// Port competition only excludes members that share a network namespace: containers
// with their own each have a 127.0.0.1, so each would bind the port and lead. On Linux,
// where Dir supports flock, the winner of the port therefore also takes the flock on
// <Dir>/<Name>.lock (the guard) before it leads, and records its network namespace in
// the token file: a member that binds the port but finds the guard held by a Leader of
// another network namespace refuses to lead, with an error that says so.
type tcpTransport struct {
	cfg       *config
	ln        net.Listener
	token     []byte
	prevToken []byte     // the previous term's, from the token file this Leader replaced
	guard     *lock.Lock // nil where flock is not used (off Linux, or unsupported on Dir)
	guardOff  bool       // flock turned out to be unsupported on Dir
	guardHeld bool
}

func (t *tcpTransport) kind() string { return "tcp" }

func (t *tcpTransport) retry() retryPolicy { return tcpRetry }

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
	if won, err := t.takeGuard(); !won || err != nil {
		_ = ln.Close()
		return false, 0, err
	}
	rec, _ := readTokenFile(t.tokenPath()) // a missing or damaged file starts at term 0
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		t.fail(ln)
		return false, 0, err
	}
	next := tokenRecord{term: rec.term + 1, pid: os.Getpid(), netns: netNamespace(), token: []byte(hex.EncodeToString(tok))}
	if err := writeTokenFile(t.tokenPath(), next, t.tokenPerm(), lock.SharedGID(t.cfg.Dir, t.cfg.share())); err != nil {
		t.fail(ln)
		return false, 0, fmt.Errorf("writing the token file: %w", err)
	}
	t.ln, t.token, t.prevToken = ln, next.token, rec.token
	return true, next.term, nil
}

// tokenPerm is the token file's mode: members of a shared group must read it.
func (t *tcpTransport) tokenPerm() os.FileMode {
	if len(t.cfg.AllowGIDs) > 0 {
		return 0o640
	}
	return 0o600
}

// takeGuard takes the flock that keeps a Leader of another network namespace from
// leading beside this one. It reports true where there is no guard (off Linux, or where
// Dir does not support flock). Held by another member, it reports false, or an error
// matching ErrConfig when the token file shows that member is in another network
// namespace: then the members do not share 127.0.0.1 and port competition cannot work.
func (t *tcpTransport) takeGuard() (bool, error) {
	if !guardSupported || t.guardOff {
		return true, nil
	}
	if t.guard == nil {
		t.guard = lock.NewShared(t.cfg.lockPath, t.cfg.share())
	}
	won, err := t.guard.TryLock()
	switch {
	case err != nil && lock.IsUnsupported(err):
		t.guardOff = true
		t.cfg.Logger.Debug("cluster: no flock on Dir: members in other network namespaces cannot be detected", "err", err)
		return true, nil
	case err != nil:
		return false, fmt.Errorf("taking the guard lock %s: %w", t.cfg.lockPath, err)
	case won:
		t.guardHeld = true
		return true, nil
	}
	// Held: either the last Leader of this network namespace is still letting go (it
	// closes its listener before it releases the guard), or a Leader elsewhere has it.
	if rec, err := readTokenFile(t.tokenPath()); err == nil {
		if me := netNamespace(); rec.netns != "" && me != "" && rec.netns != me {
			return false, fmt.Errorf("%w: Transport: %s is free in this network namespace (net:[%s]) but the cluster's Leader (pid %d, term %d, per %s) runs in network namespace net:[%s] and holds %s: "+
				"each network namespace has its own 127.0.0.1, so port competition would elect one Leader in each; run the members in one network namespace, or use the Unix transport (Config.Transport = TransportUnix, or unset %s=tcp)",
				ErrConfig, t.addr(), me, rec.pid, rec.term, t.tokenPath(), rec.netns, t.cfg.lockPath, TransportEnv)
		}
	}
	return false, nil
}

// fail undoes a claim that won the port and the guard but could not finish.
func (t *tcpTransport) fail(ln net.Listener) {
	_ = ln.Close()
	t.releaseGuard()
}

func (t *tcpTransport) releaseGuard() {
	if t.guardHeld {
		if err := t.guard.Unlock(); err != nil {
			t.cfg.Logger.Warn("cluster: releasing the guard lock", "err", err)
		}
		t.guardHeld = false
	}
}

func (t *tcpTransport) listen() (listener, error) { return tcpListener{t.ln}, nil }

// settle waits, like the Unix transport's, until the previous Leader's process has
// exited, when the guard lock recorded who it was (Linux, where Dir supports flock; off
// Linux, or without the guard, there is no one to wait for).
func (t *tcpTransport) settle() {
	if t.guardHeld {
		waitPredecessor(t.cfg, t.guard.Previous())
	}
}

// release closes the listener, then releases the guard: a member of this network
// namespace that binds the port next finds the guard held at most while this one lets go.
func (t *tcpTransport) release() {
	if t.ln != nil {
		_ = t.ln.Close()
		t.ln, t.token = nil, nil
	}
	t.releaseGuard()
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

// errStaleToken is what authorize says of the previous term's token: the Follower read
// the token file before this Leader had written its own (the Leader asks it to retry).
var errStaleToken = errors.New("the token is the previous term's")

func (t *tcpTransport) authorize(token []byte) error {
	if len(token) == 0 {
		return fmt.Errorf("no token: a follower must read it from %s", t.tokenPath())
	}
	if subtle.ConstantTimeCompare(token, t.token) == 1 {
		return nil
	}
	// The listener accepts connections before this Leader has written its token (the
	// bind that elects it is also its listen), so a Follower that connects at once may
	// read its predecessor's. It is not let in, but asked to read the file again.
	if len(t.prevToken) > 0 && subtle.ConstantTimeCompare(token, t.prevToken) == 1 {
		return fmt.Errorf("%w: read %s again", errStaleToken, t.tokenPath())
	}
	return fmt.Errorf("wrong token: it must match %s of this term", t.tokenPath())
}

func (t *tcpTransport) where() string { return t.addr() + " (tcp)" }

func (t *tcpTransport) holder() string {
	rec, err := readTokenFile(t.tokenPath())
	if err != nil || rec.term == 0 {
		return ""
	}
	msg := fmt.Sprintf("port %s last taken by pid %d, term %d", t.addr(), rec.pid, rec.term)
	if me := netNamespace(); rec.netns != "" && me != "" && rec.netns != me {
		msg += fmt.Sprintf(", in network namespace net:[%s], not this one (net:[%s]): 127.0.0.1 is not shared across network namespaces (containers); use the Unix transport or one network namespace", rec.netns, me)
	}
	return msg
}

func (t *tcpTransport) peerCredsKnown() bool { return false }

// verify has nothing to check: the bound port is the claim, and nobody can take it
// while the listener is open.
func (t *tcpTransport) verify() error { return nil }

// tcpListener adapts a TCP listener: no peer credentials on TCP.
type tcpListener struct{ net.Listener }

func (l tcpListener) Accept() (net.Conn, ipc.PeerCred, error) {
	c, err := l.Listener.Accept()
	return c, ipc.PeerCred{}, err
}

// tokenRecord is the token file: "term=N pid=P netns=I token=HEX\n" (netns: the inode
// of the Leader's network namespace, Linux only; the pid is advisory, as seen in the
// Leader's own pid namespace).
type tokenRecord struct {
	term  uint64
	pid   int
	netns string
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
		case "netns":
			rec.netns = v
		case "token":
			rec.token = []byte(v)
		}
	}
	return rec, nil
}

// writeTokenFile replaces the token file atomically: a reader sees the old record or
// the new one, never a mix. The file is 0600 from creation, then given group gid
// (unless negative) and mode perm before it is written and moved into place.
func writeTokenFile(path string, rec tokenRecord, perm os.FileMode, gid int) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	var werr error
	if gid >= 0 {
		werr = f.Chown(-1, gid)
	}
	if werr == nil && perm != 0o600 {
		werr = f.Chmod(perm)
	}
	if werr == nil {
		netns := ""
		if rec.netns != "" {
			netns = " netns=" + rec.netns
		}
		_, werr = fmt.Fprintf(f, "term=%d pid=%d%s token=%s\n", rec.term, rec.pid, netns, rec.token)
	}
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
