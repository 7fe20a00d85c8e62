package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"runtime"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/ipc"
	"github.com/cluster-client-go/cluster/lock"
)

// Transport selects how members elect a Leader and reach it.
type Transport uint8

const (
	// TransportAuto uses Unix sockets and flock, and falls back to TCP where flock on
	// Dir or Unix sockets are unavailable (and on Windows). The default.
	TransportAuto Transport = iota
	// TransportUnix forces flock election and the Unix-socket transport.
	TransportUnix
	// TransportTCP forces election by port competition on 127.0.0.1:Port and the
	// loopback TCP transport, authenticated by a token in <Dir>/<Name>.token.
	TransportTCP
)

func (t Transport) String() string {
	switch t {
	case TransportAuto:
		return "auto"
	case TransportUnix:
		return "unix"
	case TransportTCP:
		return "tcp"
	}
	return fmt.Sprintf("Transport(%d)", uint8(t))
}

// MarshalText implements encoding.TextMarshaler: "auto", "unix" or "tcp".
func (t Transport) MarshalText() ([]byte, error) {
	if t > TransportTCP {
		return nil, fmt.Errorf("cluster: cannot marshal unknown %v", t)
	}
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts the values of
// TransportEnv.
func (t *Transport) UnmarshalText(b []byte) error {
	return unmarshalEnum(t, b, "Transport", TransportAuto, TransportUnix, TransportTCP)
}

// TransportEnv is the environment variable that overrides Config.Transport: "tcp",
// "unix" or "auto". Every member of a cluster must use the same transport.
const TransportEnv = "CLUSTER_TRANSPORT"

// transport is one way to elect and connect. The run goroutine owns it.
type transport interface {
	kind() string
	// claim tries once, without blocking, to become the Leader. won=false with a nil
	// error means another member leads.
	claim() (won bool, term uint64, err error)
	// listen returns the Leader's listener after a won claim.
	listen() (listener, error)
	// settle waits, bounded, after a won claim until the previous Leader's process has
	// exited, so that the new Service never meets its predecessor's connections.
	settle()
	// release ends a won claim: the listener (if any) is closed first, so an old
	// Leader never interferes with its successor.
	release()
	// dial connects to the Leader and returns the token to present in hello.
	dial(ctx context.Context) (net.Conn, []byte, error)
	// authorize checks a Follower's hello token (Leader side).
	authorize(token []byte) error
	// where names the rendezvous point for messages: the socket path or the address.
	where() string
	// holder describes the last Leader on record, for error messages ("" if unknown).
	holder() string
	// peerCredsKnown reports whether accepted connections carry peer credentials.
	peerCredsKnown() bool
	// verify checks, while leading, that the claim still holds: nil, or why not.
	verify() error
	// retry is how Join treats the transport's failures to follow.
	retry() retryPolicy
}

// retryPolicy says when Join gives up following a Leader that will not have it, before
// its ctx ends (after Join, a member never gives up).
type retryPolicy struct {
	// refusalsBeforeFail: a Leader's refusals (unauthorized) in a row that fail Join. On
	// a Unix socket one is final; over TCP, a Follower may have read a token two quick
	// terms old, so a refusal is worth another read of the token file.
	refusalsBeforeFail int
	// hangUpsBeforeFail: handshakes in a row that the other side ends without a word
	// that fail Join (0: never). A dying Leader hangs up on at most one; a TCP port that
	// keeps doing it belongs to another program. A Unix socket in Dir is ours.
	hangUpsBeforeFail int
}

var (
	unixRetry = retryPolicy{refusalsBeforeFail: 1}
	tcpRetry  = retryPolicy{refusalsBeforeFail: 3, hangUpsBeforeFail: 3}
)

func (u *unixTransport) retry() retryPolicy { return unixRetry }

type listener interface {
	Accept() (net.Conn, ipc.PeerCred, error)
	Close() error
}

// chooseTransport applies TransportEnv (read with getenv), then Config.Transport, then
// the platform.
func (c *config) chooseTransport(getenv func(string) string) (Transport, string, error) {
	switch v := getenv(TransportEnv); v {
	case "":
	case "tcp":
		return TransportTCP, TransportEnv + "=tcp", nil
	case "unix":
		return TransportUnix, TransportEnv + "=unix", nil
	case "auto":
	default:
		return 0, "", fmt.Errorf("%w: %s=%q: want tcp, unix or auto", ErrConfig, TransportEnv, v)
	}
	switch c.Transport {
	case TransportTCP:
		return TransportTCP, "Config.Transport", nil
	case TransportUnix:
		return TransportUnix, "Config.Transport", nil
	}
	if runtime.GOOS == "windows" {
		return TransportTCP, "no Unix-socket transport on windows", nil
	}
	return TransportUnix, "default", nil
}

func newTransport(t Transport, cfg *config) transport {
	if t == TransportTCP {
		return &tcpTransport{cfg: cfg}
	}
	return &unixTransport{cfg: cfg, lk: lock.NewShared(cfg.lockPath, cfg.share())}
}

// unixTransport elects with flock on <Dir>/<Name>.lock and serves <Dir>/<Name>.sock.
type unixTransport struct {
	cfg *config
	lk  *lock.Lock
	ln  *ipc.Listener
}

func (u *unixTransport) kind() string { return "unix" }

func (u *unixTransport) claim() (bool, uint64, error) {
	won, err := u.lk.TryLock()
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			// Not retryable: the lock file or Dir must change, or this member's Config.
			return false, 0, fmt.Errorf("%w: taking the lock %s: %w (members of different uids share a group: set the same Config.AllowGIDs on every member)",
				ErrUnauthorized, u.cfg.lockPath, err)
		}
		return false, 0, fmt.Errorf("taking the lock %s: %w", u.cfg.lockPath, err)
	}
	return won, u.lk.Term(), nil
}

// settle: a killed Leader's flock is released while the kernel is still tearing the
// process down, its upstream connection among what it closes. Let it finish (from
// microseconds to a couple of milliseconds on a busy machine), so that the server never
// sees the new Leader beside it. The new Leader already listens meanwhile, so that its
// Followers' connections wait in the backlog rather than retry.
func (u *unixTransport) settle() { waitPredecessor(u.cfg, u.lk.Previous()) }

// waitPredecessor is every transport's settle: wait, at most a second, until prev (as
// the lock recorded it) has exited, and say so if it has not.
func waitPredecessor(cfg *config, prev lock.Owner) {
	if err := lock.WaitExited(prev, time.Second); err != nil {
		cfg.Logger.Warn("cluster: leading while the previous leader is still exiting", "err", err)
	}
}

func (u *unixTransport) listen() (listener, error) {
	ln, err := ipc.ListenUnixGroup(u.cfg.sockPath, u.cfg.SocketMode, lock.SharedGID(u.cfg.Dir, u.cfg.share()))
	if err != nil {
		return nil, err
	}
	u.ln = ln
	return ln, nil
}

func (u *unixTransport) release() {
	if u.ln != nil {
		_ = u.ln.Close()
		// Still holding the lock: remove our socket (only if it is still ours).
		if err := u.ln.Unlink(); err != nil {
			u.cfg.Logger.Warn("cluster: removing the socket", "err", err)
		}
		u.ln = nil
	}
	if err := u.lk.Unlock(); err != nil {
		u.cfg.Logger.Warn("cluster: releasing the lock", "err", err)
	}
}

func (u *unixTransport) dial(ctx context.Context) (net.Conn, []byte, error) {
	nc, err := ipc.DialUnix(ctx, u.cfg.sockPath)
	if errors.Is(err, ipc.ErrPermission) {
		return nil, nil, fmt.Errorf("%w: %w (the Leader's Config.SocketMode must let this member's group write the socket: 0660, the default when Config.AllowGIDs is set, on every member)",
			ErrUnauthorized, err)
	}
	return nc, nil, err
}

func (u *unixTransport) authorize([]byte) error { return nil }

func (u *unixTransport) where() string { return u.cfg.sockPath }

func (u *unixTransport) holder() string {
	if o, err := lock.ReadOwner(u.cfg.lockPath); err == nil && o.Term != 0 {
		return fmt.Sprintf("lock %s last taken by %v", u.cfg.lockPath, o)
	}
	return ""
}

func (u *unixTransport) peerCredsKnown() bool { return ipc.PeerCredSupported }

// verify checks that the lock file at the path is still the one locked: if it was
// deleted or replaced, another member can lock the new file and lead beside us.
func (u *unixTransport) verify() error { return u.lk.Verify() }

// unsupportedHere reports whether err means this platform or filesystem cannot do the
// Unix transport (flock or Unix sockets), so Auto should fall back to TCP.
func unsupportedHere(err error) bool {
	return lock.IsUnsupported(err) || errors.Is(err, errors.ErrUnsupported) ||
		errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT)
}
