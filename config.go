package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
	"github.com/cluster-client-go/cluster/lock"
)

// Defaults for Config fields left zero.
const (
	DefaultCallTimeout        = 10 * time.Second
	DefaultHeartbeat          = time.Second
	DefaultSubscriptionBuffer = 1024
	DefaultMaxBody            = frame.DefaultMaxBody
	DefaultMaxBlob            = 1 << 30
	DefaultSocketMode         = os.FileMode(0o600)
	DefaultGroupSocketMode    = os.FileMode(0o660) // SocketMode's default with AllowGIDs: the group may connect, SO_PEERCRED still decides
	handshakeTimeout          = 5 * time.Second    // a Follower's wait for the welcome
	minMaxBody                = 1 << 10            // the smallest MaxBody: below it, a peer could make every message undeliverable
	drainTimeout              = 5 * time.Second
	lastFlush                 = 100 * time.Millisecond // a handover's last writes after drainTimeout
)

// LeadPolicy says whether a member takes part in the election.
type LeadPolicy uint8

const (
	// LeadAuto: compete for the lock; lead if it is free, follow otherwise. The default.
	LeadAuto LeadPolicy = iota
	// LeadNever: only ever follow (short-lived tools, CLIs). Join waits for a Leader.
	LeadNever
	// LeadAlways: the designated Leader, for a process that is meant to lead. It never
	// follows: Join waits, within its ctx, until it holds the lock.
	LeadAlways
)

func (p LeadPolicy) String() string {
	switch p {
	case LeadAuto:
		return "auto"
	case LeadNever:
		return "never"
	case LeadAlways:
		return "always"
	}
	return fmt.Sprintf("LeadPolicy(%d)", uint8(p))
}

// MarshalText implements encoding.TextMarshaler: "auto", "never" or "always".
func (p LeadPolicy) MarshalText() ([]byte, error) {
	if p > LeadAlways {
		return nil, fmt.Errorf("cluster: cannot marshal unknown %v", p)
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, so that a LeadPolicy can be read
// from a configuration file or a flag (flag.TextVar).
func (p *LeadPolicy) UnmarshalText(b []byte) error {
	return unmarshalEnum(p, b, "LeadPolicy", LeadAuto, LeadNever, LeadAlways)
}

// Config configures a member. Only Name and, for members that may lead, NewService are
// required; every zero field means its documented default.
type Config struct {
	// Name is the election key: members with the same Name and Dir share one Leader. It
	// names the files <Dir>/<Name>.lock and <Dir>/<Name>.sock, so it must be a plain
	// file name (no '/', not "." or "..", at most 64 bytes).
	Name string
	// Dir holds the lock and the socket. Default: lock.DefaultDir(), a per-user runtime
	// directory. A member that may lead creates it 0700 if missing; a LeadNever member
	// creates nothing and waits for a Leader to. It is refused (ErrConfig, naming what
	// to change) if another user owns it, others may write it, or this member may not
	// use it: create files in it (a member that may lead) or reach its socket. Members
	// in different containers share a Leader by pointing Dir at a shared volume.
	Dir string
	// NewService builds the real client. It is called only in the Leader, once per
	// leadership term, with a context that ends when the term ends. Required unless Lead
	// is LeadNever.
	//
	// If it fails (returns an error or a nil Service, or panics) the member releases
	// the lock at once, so that another member may try, and:
	//   - during Join, Join returns an error matching ErrServiceUnavailable that wraps
	//     NewService's error (errors.Is and errors.As reach it);
	//   - later (this member was promoted after a failover), it stays away from the
	//     lock for 250 ms, doubling with each failure in a row up to 8 s (±25% jitter),
	//     and follows any member that leads meanwhile; until a Leader serves it, its
	//     calls fail at once with an error matching ErrServiceUnavailable that wraps
	//     the cause, instead of waiting out their deadlines.
	NewService func(ctx context.Context) (Service, error)
	// Lead is the member's election policy. Default LeadAuto.
	Lead LeadPolicy
	// CallTimeout bounds calls whose ctx has no deadline. Default DefaultCallTimeout;
	// negative means no default bound (the ctx alone decides).
	CallTimeout time.Duration
	// HeartbeatTimeout is the switch between "dead" and "slow". Zero, the default, means
	// a peer is dead only when its connection ends: on one host the kernel closes a
	// process's sockets the moment it exits, even by SIGKILL, so a Leader's death is seen
	// at once through EOF and a process paused in a debugger, stopped (SIGSTOP, docker
	// pause) or busy for minutes keeps its connection, its subscriptions and its
	// registrations; calls to a paused Leader wait out their own deadlines. A positive
	// value also drops a connection on which nothing was heard for that long (pings keep
	// an idle one alive), and one whose writes make no progress for that long: choose it
	// to free a hung peer's resources. A stopped Leader is never replaced either way: it
	// still holds the lock.
	HeartbeatTimeout time.Duration
	// Heartbeat is how often an idle connection is pinged when HeartbeatTimeout is set.
	// Default DefaultHeartbeat, or HeartbeatTimeout/3 if that is shorter.
	Heartbeat time.Duration
	// MaxBody is the largest payload this member accepts in one frame. Default
	// DefaultMaxBody (16 MiB).
	MaxBody int
	// MaxBlob is the largest Message.Blob this member accepts as a descriptor from
	// another process; a larger one is closed unread and the call fails with
	// ErrTooLarge. (A blob sent inline, over TCP, counts against MaxBody instead.)
	// Default DefaultMaxBlob (1 GiB).
	MaxBlob int
	// SubscriptionBuffer is how many undelivered messages each Subscription queues for a
	// slow callback before it drops the oldest (counted in Stats.Dropped). Default
	// DefaultSubscriptionBuffer.
	SubscriptionBuffer int
	// SocketMode is the Leader's socket permission. Default DefaultSocketMode (0600,
	// owner only), or DefaultGroupSocketMode (0660) when AllowGIDs is set, so that members of
	// other uids in a shared group can connect (connecting needs write permission).
	SocketMode os.FileMode
	// AllowUIDs admits Followers running as these uids besides the Leader's own (checked
	// with SO_PEERCRED on accept, Linux), and lets Dir be owned by one of them.
	AllowUIDs []uint32
	// AllowGIDs shares the cluster with members of these groups, for members that run as
	// different uids (containers on one volume): a Follower whose gid or one of whose
	// supplementary groups is listed is admitted (SO_PEERCRED, SO_PEERGROUPS), Dir may
	// belong to and be writable by a listed group (give it mode 2770: set-group-ID, not
	// sticky), and the lock file, the socket and the token file are created readable and
	// writable by Dir's group (0660; the token 0640) and given that group. Set the same
	// AllowGIDs on every member: any of them may lead.
	AllowGIDs []uint32
	// Logger receives role changes and dropped connections. Default: slog.Default().
	Logger *slog.Logger
	// OnRoleChange is called with every role change, in order, on a goroutine of its
	// own (never on a connection goroutine); the first call reports the role Join
	// returned with. A panic in it is recovered, logged and counted (Stats.Panics); it
	// may call Client.Close.
	OnRoleChange func(RoleInfo)
	// Transport selects Unix sockets with flock, or loopback TCP with port competition.
	// Default TransportAuto; the environment variable CLUSTER_TRANSPORT overrides it.
	Transport Transport
	// Port is the loopback port of the TCP transport. Default DefaultPort(Name).
	Port int
	// Limits bound what each peer can make the Leader hold (connections, requests,
	// subscriptions, registrations, descriptors, memory, time). Zero fields mean their
	// defaults (DefaultLimits), which suit a worker pool of thousands of processes;
	// set them on every member, since any may lead.
	Limits Limits
	// Identity names the Service contract this program expects of its Leader: its
	// methods, topics and payloads, say "users-api/v2". Members exchange it when they
	// connect, and a Leader refuses a Follower whose Identity differs from its own
	// (ErrIdentityMismatch, naming both), so that two programs that share a Name and a
	// Dir by mistake, or two incompatible versions of one program, are never served each
	// other's answers. Keep it when a new version stays compatible (old and new members
	// then share one Leader through a rolling upgrade); change it, together with Name,
	// when it does not (the two versions then run as two clusters side by side, each
	// with its own Leader, until the old one is gone). At most 255 bytes; members that
	// leave it empty match each other only.
	Identity string
	// Errors gives the Service's errors an identity that crosses processes. Each entry
	// maps a code (1 to 64 bytes of letters, digits and ". _ - : /"; at most 32 entries)
	// to an error value, usually a sentinel:
	//
	//	Errors: map[string]error{"not-found": ErrNotFound, "conflict": ErrConflict}
	//
	// When a Service method fails, the Leader sends the code of every entry its error
	// matches (errors.Is), and the caller, Leader or Follower, gets a *RemoteError that
	// unwraps to its own entries for those codes: errors.Is(err, ErrNotFound) then holds
	// in every role. Set the same map on every member; a code a member does not know is
	// kept in RemoteError.Codes and matches nothing. Errors that match no entry arrive
	// as a *RemoteError with their text only.
	Errors map[string]error
}

// config is a validated Config with defaults applied.
type config struct {
	Config
	lockPath, sockPath string
	transport          Transport // the transport chosen at Join (Auto may still fall back)
	transportWhy       string
	errCodes           []errCode // Errors, sorted by code
	lim                Limits    // Limits with defaults applied
	dirMissing         bool      // LeadNever only: Dir did not exist at Join
	env                osEnv     // how Join looked at the operating system
}

// errCode is one entry of Config.Errors.
type errCode struct {
	code string
	err  error
}

// Validate reports, with an error matching ErrConfig that names the field, whether c
// can be used. It only looks at c: it reads no environment and touches no file (Join
// does that, and may still refuse Dir or CLUSTER_TRANSPORT). Join calls it first; call
// it yourself to check a Config early.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Name == "":
		return bad("Name", "must not be empty")
	case len(c.Name) > 64:
		return bad("Name", "%q is %d bytes, the limit is 64", c.Name, len(c.Name))
	case c.Name == "." || c.Name == "..":
		return bad("Name", "%q is not a file name", c.Name)
	case strings.ContainsAny(c.Name, "/\\\x00"):
		return bad("Name", "%q must not contain '/', '\\' or NUL: it names files in Dir", c.Name)
	}
	switch {
	case c.NewService == nil && c.Lead != LeadNever:
		return bad("NewService", "required unless Lead is LeadNever")
	case c.Lead > LeadAlways:
		return bad("Lead", "unknown policy %d", c.Lead)
	case c.MaxBody != 0 && (c.MaxBody < minMaxBody || c.MaxBody > 1<<30):
		return bad("MaxBody", "%d is outside 1 KiB..1 GiB (0: the default)", c.MaxBody)
	case c.MaxBlob < 0:
		return bad("MaxBlob", "%d is negative", c.MaxBlob)
	case c.Port < 0 || c.Port > 65535:
		return bad("Port", "%d is not a TCP port", c.Port)
	case c.Transport > TransportTCP:
		return bad("Transport", "unknown transport %d", c.Transport)
	case c.SocketMode&^os.ModePerm != 0:
		return bad("SocketMode", "%v has bits other than permissions", c.SocketMode)
	case c.HeartbeatTimeout < 0:
		return bad("HeartbeatTimeout", "%v is negative; use 0 to detect only dead peers (the default) or a positive duration", c.HeartbeatTimeout)
	case c.Heartbeat < 0:
		return bad("Heartbeat", "%v is negative", c.Heartbeat)
	case len(c.Identity) > frame.MaxIdentity:
		return bad("Identity", "%d bytes, the limit is %d", len(c.Identity), frame.MaxIdentity)
	case len(c.Errors) > frame.MaxCodes:
		return bad("Errors", "%d entries, the limit is %d", len(c.Errors), frame.MaxCodes)
	}
	if err := c.Limits.validate(); err != nil {
		return bad("Limits", "%v", err)
	}
	for code, err := range c.Errors {
		switch {
		case !frame.ValidCode(code):
			return bad("Errors", "code %q must be 1 to %d bytes of letters, digits and \". _ - : /\"", code, frame.MaxCode)
		case err == nil:
			return bad("Errors", "code %q maps to a nil error", code)
		}
	}
	return nil
}

// osEnv is every way Join looks at the operating system before it elects: the
// environment, the default Dir, the kind of filesystem Dir is on. Tests give Join
// another (see prepare) rather than replacing package variables.
type osEnv struct {
	getenv     func(string) string
	defaultDir func() string
	fsKind     func(dir string) (kind string, network bool, err error)
}

// hostEnv is the real one.
var hostEnv = osEnv{getenv: os.Getenv, defaultDir: lock.DefaultDir, fsKind: lock.FSKind}

// validate is Validate, then prepare in the host's environment.
func (c Config) validate() (*config, error) { return c.prepare(hostEnv) }

// prepare validates c, applies the defaults, chooses the transport (CLUSTER_TRANSPORT
// first) and checks Dir, creating it for a member that may lead.
func (c Config) prepare(env osEnv) (*config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cfg := &config{Config: c, lim: c.Limits.withDefaults(), env: env}
	for code, err := range c.Errors {
		cfg.errCodes = append(cfg.errCodes, errCode{code, err})
	}
	slices.SortFunc(cfg.errCodes, func(a, b errCode) int { return strings.Compare(a.code, b.code) })
	cfg.applyDefaults(env)
	if !filepath.IsAbs(cfg.Dir) {
		abs, err := filepath.Abs(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: Dir: %v", ErrConfig, err)
		}
		cfg.Dir = abs
	}
	cfg.lockPath = filepath.Join(cfg.Dir, cfg.Name+".lock")
	cfg.sockPath = filepath.Join(cfg.Dir, cfg.Name+".sock")
	var err error
	if cfg.transport, cfg.transportWhy, err = cfg.chooseTransport(env.getenv); err != nil {
		return nil, err
	}
	if cfg.transport == TransportUnix {
		if err := ipc.CheckUnixPath(cfg.sockPath); err != nil {
			return nil, fmt.Errorf("%w: Dir: %w (or use the TCP transport)", ErrConfig, err)
		}
	}
	// A member that never leads creates nothing: a Dir that does not exist yet is
	// waited for (see Client.dirReady), like a Leader that has not started.
	switch err := cfg.checkDir(env.fsKind); {
	case cfg.Lead == LeadNever && errors.Is(err, fs.ErrNotExist):
		cfg.dirMissing = true
	case err != nil:
		return nil, err
	}
	return cfg, nil
}

// applyDefaults gives every zero field its default.
func (cfg *config) applyDefaults(env osEnv) {
	if cfg.Dir == "" {
		cfg.Dir = env.defaultDir()
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
		if cfg.HeartbeatTimeout > 0 {
			cfg.Heartbeat = min(cfg.Heartbeat, cfg.HeartbeatTimeout/3)
		}
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBlob == 0 {
		cfg.MaxBlob = DefaultMaxBlob
	}
	if cfg.SubscriptionBuffer <= 0 {
		cfg.SubscriptionBuffer = DefaultSubscriptionBuffer
	}
	if cfg.SocketMode == 0 {
		cfg.SocketMode = DefaultSocketMode
		if len(cfg.AllowGIDs) > 0 {
			cfg.SocketMode = DefaultGroupSocketMode
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort(cfg.Name)
	}
}

// checkDir checks Dir as Join needs it, creating it for a member that may lead: on a
// local filesystem, owned and shared as PrepareDir requires, and usable by this process
// (write and search to lead, search to follow). Its errors match ErrConfig, except that
// a missing Dir, for a member that never leads, is an error matching fs.ErrNotExist.
func (c *config) checkDir(fsKind func(string) (string, bool, error)) error {
	// Check the filesystem before PrepareDir creates anything: where Dir does not exist
	// yet, the filesystem it would be created on is its nearest existing ancestor's.
	if kind, network, err := fsKind(existingAncestor(c.Dir)); err == nil && network {
		return fmt.Errorf("%w: Dir: %s is on a %s filesystem: the lock may be shared across hosts (or not honoured) while the socket is not; "+
			"use a directory on a local filesystem: a bind mount of one, or a named volume (on Docker Desktop, a named volume, not a host directory)", ErrConfig, c.Dir, kind)
	}
	create := c.Lead != LeadNever
	err := lock.PrepareDir(c.Dir, create, c.share())
	if !create && errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("Dir %s does not exist: no leader has run there yet (a LeadNever member does not create it; check Config.Dir): %w", c.Dir, fs.ErrNotExist)
	}
	if err == nil {
		err = lock.CheckAccess(c.Dir, create, c.share())
	}
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, lock.ErrDirOwner):
			hint = " (allow a group with Config.AllowGIDs, or trust a uid with Config.AllowUIDs, on every member)"
		case errors.Is(err, lock.ErrDirGroup):
			hint = " (allow a group with Config.AllowGIDs, on every member)"
		}
		return fmt.Errorf("%w: Dir: %w%s", ErrConfig, err, hint)
	}
	return nil
}

// existingAncestor returns dir, or its nearest ancestor that exists.
func existingAncestor(dir string) string {
	for {
		if _, err := os.Lstat(dir); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// share is whom Dir and the files in it are shared with.
func (c *config) share() lock.Share {
	return lock.Share{UIDs: c.AllowUIDs, GIDs: c.AllowGIDs}
}

func (c *config) limits() frame.Limits { return frame.Limits{MaxBody: uint32(c.MaxBody)} }

// connOptions are the options of a connection to the Leader (a Follower's).
func (c *config) connOptions() ipc.Options {
	o := ipc.Options{Limits: c.limits(), Logger: c.Logger, Heartbeat: -1} // dead = EOF only
	if c.HeartbeatTimeout > 0 {
		o.Heartbeat, o.HeartbeatTimeout = c.Heartbeat, c.HeartbeatTimeout
	}
	return o
}

// peerOptions are the options of the Leader's connection to a Follower: the same, under
// the Leader's Limits; budget bounds the memory of every connection's incomplete frames
// (nil: no bound).
func (c *config) peerOptions(budget *ipc.Budget) ipc.Options {
	o := c.connOptions()
	o.Limits.MaxMeta = uint32(c.lim.MaxNameLen)
	o.MaxQueue = c.lim.MaxQueued
	o.Budget, o.FrameTimeout = budget, c.lim.FrameTimeout
	o.Logger = nil // the Leader logs why a connection ended itself, rate-limited (leader.noteEnd)
	return o
}

// codesOf returns the codes and errors of the Errors entries err matches.
func (c *config) codesOf(err error) (codes []string, errs []error) {
	for _, e := range c.errCodes {
		if errors.Is(err, e.err) {
			codes, errs = append(codes, e.code), append(errs, e.err)
		}
	}
	return codes, errs
}

// errorsFor returns this member's errors for codes, skipping codes it does not know.
func (c *config) errorsFor(codes []string) []error {
	var errs []error
	for _, code := range codes {
		i, ok := slices.BinarySearchFunc(c.errCodes, code, func(e errCode, code string) int { return strings.Compare(e.code, code) })
		if ok {
			errs = append(errs, c.errCodes[i].err)
		}
	}
	return errs
}
