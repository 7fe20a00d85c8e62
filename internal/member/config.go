// Package member is the cluster member that the project's real-process tests and its
// bench run as child processes: the test or bench binary re-executed.
//
// The parent describes the member with a Config and starts it with Start, which passes
// the Config to the child as JSON in one environment variable (Env). The child notices
// it (FromEnv) and runs Main, which joins the cluster and then serves Commands read
// one per line, as JSON, on its stdin. Every line it writes on stdout is one JSON
// Event: "joined" (or "join-error") once Join returned, "role" on every role change,
// "msg" for every message a subscription receives, and one "result" per Command, with
// the Command's ID. When its stdin ends, the member waits for the Commands still
// running, closes its Client and exits (0, or 1 if Close failed).
//
// A harness adds what only it needs (a wrapped Service, checks that run inside the
// member, commands of its own) with a Program.
package member

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

// Env is the environment variable that carries a member's Config to the child, as
// JSON. A process in whose environment it is set is a member (FromEnv).
const Env = "CLUSTER_MEMBER"

// DefaultJoinTimeout bounds Join when Config.JoinTimeout is zero.
const DefaultJoinTimeout = 30 * time.Second

// Config describes one member process. The zero value of a field means the library's
// default for the matching cluster.Config field.
type Config struct {
	// Program names what the child runs, for a harness whose binary runs more than one
	// kind of child ("member", or a hostile peer...); Main does not read it.
	Program string `json:"program,omitempty"`

	Name      string             `json:"name"`
	Dir       string             `json:"dir"`
	Transport cluster.Transport  `json:"transport,omitempty"`
	Port      int                `json:"port,omitempty"`
	Lead      cluster.LeadPolicy `json:"lead,omitempty"`
	Identity  string             `json:"identity,omitempty"`
	// Upstream is the address of an internal/upstream server: the member's Service
	// talks to it. Empty: the member's Service is the in-process echo Service.
	Upstream string `json:"upstream,omitempty"`
	// Heartbeat sets cluster.Config.Heartbeat, and HeartbeatTimeout to three times it.
	Heartbeat  time.Duration  `json:"heartbeat,omitempty"`
	Limits     cluster.Limits `json:"limits,omitzero"`
	AllowGIDs  []uint32       `json:"allowGIDs,omitempty"`
	SocketMode os.FileMode    `json:"socketMode,omitempty"`
	MaxBody    int            `json:"maxBody,omitempty"`
	// NoFile, when set, lowers the member's RLIMIT_NOFILE to it before Join (Linux).
	NoFile uint64 `json:"noFile,omitempty"`
	// JoinTimeout bounds Join. Default DefaultJoinTimeout.
	JoinTimeout time.Duration `json:"joinTimeout,omitempty"`
	// Log is the level of the member's log on stderr: "debug", "info", "warn" or
	// "error". Empty: no log.
	Log string `json:"log,omitempty"`

	// Args are the harness's own settings, for its Program to read (Member.Args).
	Args json.RawMessage `json:"args,omitempty"`
}

// Environ returns the Env entry that carries c, "CLUSTER_MEMBER=<json>", to add to a
// child's environment.
func (c Config) Environ() (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("member: encoding the Config: %w", err)
	}
	return Env + "=" + string(b), nil
}

// WithArgs returns c with Args set to v as JSON. It panics if v cannot be encoded as
// JSON (a programming error of the harness).
func (c Config) WithArgs(v any) Config {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("member: encoding Args: %v", err))
	}
	c.Args = b
	return c
}

// FromEnv returns the Config in Env, and whether this process is a member at all.
func FromEnv() (Config, bool, error) {
	s, ok := os.LookupEnv(Env)
	if !ok {
		return Config{}, false, nil
	}
	var c Config
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return Config{}, true, fmt.Errorf("member: %s does not hold a Config: %w", Env, err)
	}
	return c, true, nil
}

// Cluster returns the cluster.Config that c describes: its Service (an upstream client
// or the echo Service, either answering "whoami"), with the logger c.Log names. It has
// no OnRoleChange: Main adds its own.
func (c Config) Cluster() (cluster.Config, error) {
	newService := newEchoService
	if c.Upstream != "" {
		newService = upstream.NewService(c.Upstream)
	}
	logger, err := c.logger(os.Stderr)
	if err != nil {
		return cluster.Config{}, err
	}
	cfg := cluster.Config{
		Name:       c.Name,
		Dir:        c.Dir,
		Transport:  c.Transport,
		Port:       c.Port,
		Lead:       c.Lead,
		Identity:   c.Identity,
		NewService: withWhoami(newService),
		Limits:     c.Limits,
		AllowGIDs:  c.AllowGIDs,
		SocketMode: c.SocketMode,
		MaxBody:    c.MaxBody,
		Logger:     logger,
	}
	if c.Heartbeat > 0 {
		cfg.Heartbeat, cfg.HeartbeatTimeout = c.Heartbeat, 3*c.Heartbeat
	}
	return cfg, nil
}

func (c Config) logger(w io.Writer) (*slog.Logger, error) {
	if c.Log == "" {
		return slog.New(slog.DiscardHandler), nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Log)); err != nil {
		return nil, fmt.Errorf("member: Config.Log: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

func (c Config) joinTimeout() time.Duration {
	if c.JoinTimeout > 0 {
		return c.JoinTimeout
	}
	return DefaultJoinTimeout
}

// errNoFile is returned where a lower RLIMIT_NOFILE cannot be set.
var errNoFile = errors.New("member: Config.NoFile is supported on Linux only")

// join joins the cluster described by cfg within c's join timeout.
func (c Config) join(cfg cluster.Config) (*cluster.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.joinTimeout())
	defer cancel()
	return cluster.Join(ctx, cfg)
}
