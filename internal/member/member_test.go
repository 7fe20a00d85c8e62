package member_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/member"
)

func TestMain(m *testing.M) {
	if cfg, ok, err := member.FromEnv(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(member.Main(cfg, program))
	}
	os.Exit(m.Run())
}

// program adds one op, "twice", whose Body is its Args doubled, and a Setup that
// fails when the Args say so.
var program = member.Program{
	Setup: func(m *member.Member) error {
		var a struct{ FailSetup bool }
		if err := m.Args(&a); err != nil {
			return err
		}
		if a.FailSetup {
			return errors.New("asked to fail")
		}
		return nil
	},
	Ops: map[string]member.Op{
		"twice": func(_ context.Context, _ *member.Member, c member.Command) (any, error) {
			var n int
			if err := json.Unmarshal(c.Args, &n); err != nil {
				return nil, err
			}
			return 2 * n, nil
		},
	},
}

func start(t *testing.T, cfg member.Config) *member.Proc {
	t.Helper()
	p, err := member.Start(member.Spec{Config: cfg, Args: []string{"-test.run=^$"}})
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("member %d stderr:\n%s", p.PID(), p.Stderr())
		}
	})
	return p
}

// tempDir makes a Dir for members, removed once the test's members were killed (the
// cleanups of start run before this one).
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "") // short: socket paths live in it
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// exited waits until p has exited, failing the test if it does not.
func exited(t *testing.T, p *member.Proc) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("member %d has not exited after 30s", p.PID())
	}
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The Config reaches the child whole, the built-in and Program ops answer, messages
// reach subscribers, and the member exits 0 once its stdin ends.
func TestMemberRoundTrip(t *testing.T) {
	dir := tempDir(t)
	cfg := member.Config{Name: "m", Dir: dir, Identity: "id/v1", Log: "debug", Heartbeat: 100 * time.Millisecond}
	leader := start(t, cfg)
	j, err := leader.Joined(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "leader", j.Role)
	require.Equal(t, leader.PID(), j.PID)

	f := start(t, cfg)
	j, err = f.Joined(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "follower", j.Role)

	r, err := f.Do(ctx(t), member.Command{Op: "invoke", Name: "echo", Data: "hi"})
	require.NoError(t, err)
	require.Empty(t, r.Err)
	require.Equal(t, "hi", r.Data)
	r, err = f.Do(ctx(t), member.Command{Op: "invoke", Name: "whoami"})
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(r.Data, fmt.Sprintf(" %d", leader.PID())), "whoami answered %q", r.Data)

	r, err = f.Do(ctx(t), member.Command{Op: "stats"})
	require.NoError(t, err)
	var st cluster.Stats
	require.NoError(t, json.Unmarshal([]byte(r.Data), &st))
	require.Equal(t, "m", st.Name)
	require.Equal(t, dir, st.Dir)
	other := cfg
	other.Identity = "id/v2"
	e, err := start(t, other).Joined(ctx(t))
	require.ErrorIs(t, err, member.ErrJoin)
	require.Equal(t, "identity", e.Kind, e.Err)

	sub, err := f.Send(member.Command{Op: "subscribe", Name: "t"})
	require.NoError(t, err)
	r, err = f.Result(ctx(t), sub)
	require.NoError(t, err)
	require.Empty(t, r.Err)
	r, err = leader.Do(ctx(t), member.Command{Op: "publish", Name: "t", Data: "x"})
	require.NoError(t, err)
	require.Empty(t, r.Err)
	_, err = f.Wait(ctx(t), func(e member.Event) bool { return e.Ev == member.EvMsg && e.Sub == sub && e.Data == "x" })
	require.NoError(t, err)

	r, err = f.Do(ctx(t), member.Command{Op: "twice", Args: json.RawMessage("21")})
	require.NoError(t, err)
	require.Equal(t, "42", string(r.Body))
	r, err = f.Do(ctx(t), member.Command{Op: "thrice"})
	require.NoError(t, err)
	require.Contains(t, r.Err, "unknown op")

	r, err = f.Do(ctx(t), member.Command{Op: "invoke", Name: "nothing", Timeout: "5s"})
	require.NoError(t, err)
	require.Equal(t, "remote", r.Kind, r.Err)
	require.NoError(t, f.CloseInput())
	exited(t, f)
	require.Equal(t, 0, f.ProcessState().ExitCode(), f.Stderr())
	require.NoError(t, leader.CloseInput())
	exited(t, leader)
	require.Equal(t, 0, leader.ProcessState().ExitCode(), leader.Stderr())
}

// A failed Setup and a failed Join are join-error Events, and the member exits.
func TestMemberJoinError(t *testing.T) {
	dir := tempDir(t)
	p := start(t, member.Config{Name: "m", Dir: dir}.WithArgs(map[string]bool{"FailSetup": true}))
	e, err := p.Joined(ctx(t))
	require.ErrorIs(t, err, member.ErrJoin)
	require.Equal(t, "setup", e.Kind)
	require.Contains(t, e.Err, "asked to fail")
	exited(t, p)
	require.Equal(t, 4, p.ProcessState().ExitCode())

	p = start(t, member.Config{Name: "m", Dir: dir, Lead: cluster.LeadNever, JoinTimeout: 200 * time.Millisecond})
	e, err = p.Joined(ctx(t))
	require.ErrorIs(t, err, member.ErrJoin)
	require.Equal(t, "no-leader", e.Kind, e.Err)
	exited(t, p)
	require.Equal(t, 3, p.ProcessState().ExitCode())
	_, err = p.Wait(ctx(t), func(e member.Event) bool { return e.Ev == member.EvJoined })
	require.ErrorIs(t, err, member.ErrExited)
}
