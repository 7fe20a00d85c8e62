//go:build linux

package cluster_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/internal/member"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

// Members that run as different uids on one volume, as containers started with
// different "user:" settings do. They share group sharedGID: uid 1000 has it as its
// primary group ("user: 1000:2000"), uid 1001 as a supplementary one ("user: 1001" plus
// "group_add: [2000]"). The volume is root's, group sharedGID, mode 2770.
const sharedGID = 2000

var (
	uid1000 = &syscall.Credential{Uid: 1000, Gid: sharedGID}
	uid1001 = &syscall.Credential{Uid: 1001, Gid: 1001, Groups: []uint32{sharedGID}}
	shared  = member.Config{AllowGIDs: []uint32{sharedGID}}
)

// sharedVolume returns a test cluster whose Dir is a fresh volume owned by root, group
// sharedGID, with mode (2770 for a volume prepared as documented), and the path of a
// copy of the test binary that other uids may run.
func sharedVolume(t *testing.T, mode fs.FileMode) (*testCluster, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run members as uids 1000 and 1001")
	}
	base, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	vol := filepath.Join(base, "vol")
	require.NoError(t, os.Mkdir(vol, 0o700))
	require.NoError(t, os.Chown(vol, 0, sharedGID))
	require.NoError(t, os.Chmod(vol, mode)) // chmod: Mkdir's mode is cut by the umask
	up, err := upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { up.Close() })
	return &testCluster{t: t, dir: vol, name: "svc", upstream: up, transport: "unix"}, publicCopy(t, os.Args[0])
}

// startAs starts a member running as cred, with the Config fields cfg sets.
func startAs(tc *testCluster, bin string, cred *syscall.Credential, cfg member.Config) *proc {
	tc.t.Helper()
	return tc.start(memberOpts{bin: bin, attr: &syscall.SysProcAttr{Credential: cred}, cfg: cfg})
}

func owner(t *testing.T, path string) (uid, gid uint32, perm fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode().Perm()
}

// TestMultiUIDWithTheDocumentedConfig: with AllowGIDs on every member, members of uids
// 1000 and 1001 elect one Leader, call and subscribe through it, and a Leader of the
// other uid takes over the dead one's socket.
func TestMultiUIDWithTheDocumentedConfig(t *testing.T) {
	tc, bin := sharedVolume(t, 0o770|fs.ModeSetgid)
	a := startAs(tc, bin, uid1000, shared)
	require.Equal(t, "leader", a.joined().Role)
	b := startAs(tc, bin, uid1001, shared)
	require.Equal(t, "follower", b.joined().Role, "uid 1001 (group %d supplementary) was not admitted", sharedGID)

	lockPath, sock := filepath.Join(tc.dir, "svc.lock"), filepath.Join(tc.dir, "svc.sock")
	uid, gid, perm := owner(t, lockPath)
	require.Equal(t, []any{uint32(1000), uint32(sharedGID), fs.FileMode(0o660)}, []any{uid, gid, perm}, "lock file")
	uid, gid, perm = owner(t, sock)
	require.Equal(t, []any{uint32(1000), uint32(sharedGID), fs.FileMode(0o660)}, []any{uid, gid, perm}, "socket")
	lockIno := inode(t, lockPath)

	sub := b.do(command{Op: "subscribe", Name: "cfg"})
	require.Empty(t, sub.Err)
	r := b.do(command{Op: "invoke", Name: "echo", Data: "from 1001"})
	require.Empty(t, r.Err)
	require.Equal(t, "from 1001", r.Data)
	require.Equal(t, 1, tc.upstream.Push("cfg", []byte("v1")))
	b.waitMessage(sub.ID, "v1")

	// The Leader of uid 1000 dies; uid 1001 replaces its socket and leads.
	a.Kill()
	require.Eventually(t, func() bool { return b.role().Role == "leader" }, waitTimeout, time.Millisecond)
	uid, gid, perm = owner(t, sock)
	require.Equal(t, []any{uint32(1001), uint32(sharedGID), fs.FileMode(0o660)}, []any{uid, gid, perm}, "the new leader's socket")
	c := startAs(tc, bin, uid1000, shared)
	require.Equal(t, "follower", c.joined().Role, "uid 1000 cannot follow a leader of uid 1001")
	r = c.do(command{Op: "invoke", Name: "echo", Data: "from 1000"})
	require.Empty(t, r.Err)
	require.Equal(t, "from 1000", r.Data)
	tc.awaitNewSubscriber(t, "cfg", 2)
	require.Equal(t, 1, tc.upstream.Push("cfg", []byte("v2")))
	b.waitMessage(sub.ID, "v2")
	require.Equal(t, lockIno, inode(t, lockPath), "the lock file was replaced")
}

// TestMultiUIDRefusals: without the documented config, a member of another uid is
// refused, and the error names the setting to change.
func TestMultiUIDRefusals(t *testing.T) {
	t.Run("no AllowGIDs on the member", func(t *testing.T) {
		tc, bin := sharedVolume(t, 0o770|fs.ModeSetgid)
		e := joinError(t, startAs(tc, bin, uid1001, member.Config{}))
		require.Contains(t, e.Err, fmt.Sprintf("writable by its group gid %d", sharedGID))
		require.Contains(t, e.Err, "Config.AllowGIDs")
	})
	t.Run("a volume the member cannot write", func(t *testing.T) {
		// A fresh named volume is root's and 0755 unless the image prepared it.
		tc, bin := sharedVolume(t, 0o755)
		// A problem with the Dir, named as one: not a refusal by a Leader.
		e := joinError(t, startAs(tc, bin, uid1000, member.Config{}))
		require.Equal(t, "config", e.Kind, e.Err)
		require.Contains(t, e.Err, "this process may not create the lock file and the socket in "+tc.dir)
		require.Contains(t, e.Err, "owner uid 0")
		require.Contains(t, e.Err, "this process runs as uid 1000")
		require.NotContains(t, e.Err, "not authorized")
	})
	t.Run("the Leader's socket is 0600", func(t *testing.T) {
		tc, bin := sharedVolume(t, 0o770|fs.ModeSetgid)
		a := startAs(tc, bin, uid1000, member.Config{AllowGIDs: shared.AllowGIDs, SocketMode: 0o600})
		require.Equal(t, "leader", a.joined().Role)
		e := joinError(t, startAs(tc, bin, uid1001, shared))
		require.Equal(t, "unauthorized", e.Kind)
		require.Contains(t, e.Err, "Config.SocketMode")
		require.Contains(t, e.Err, "permission denied")
	})
	t.Run("the Leader does not allow the member's groups", func(t *testing.T) {
		// Only SO_PEERCRED stands in the way: the socket is 0666 and Dir searchable.
		tc, bin := sharedVolume(t, 0o771|fs.ModeSetgid)
		a := startAs(tc, bin, uid1000, member.Config{AllowGIDs: shared.AllowGIDs, SocketMode: 0o666})
		require.Equal(t, "leader", a.joined().Role)
		stranger := &syscall.Credential{Uid: 1003, Gid: 3000, Groups: []uint32{}}
		// A member that never leads: it only connects (it could not open the lock file).
		p := tc.start(memberOpts{bin: bin, attr: &syscall.SysProcAttr{Credential: stranger}, cfg: shared, lead: "never"})
		e := joinError(t, p)
		require.Equal(t, "unauthorized", e.Kind)
		require.Contains(t, e.Err, "uid=1003 gid=3000")
		require.Contains(t, e.Err, "Config.AllowGIDs")
	})
	t.Run("a lock file left private", func(t *testing.T) {
		tc, bin := sharedVolume(t, 0o770|fs.ModeSetgid)
		lockPath := filepath.Join(tc.dir, "svc.lock")
		require.NoError(t, os.WriteFile(lockPath, nil, 0o600))
		require.NoError(t, os.Chown(lockPath, 1000, 1000))
		e := joinError(t, startAs(tc, bin, uid1001, shared))
		require.Equal(t, "unauthorized", e.Kind)
		require.Contains(t, e.Err, "chmod 0660 "+lockPath)
		require.Contains(t, e.Err, "Config.AllowGIDs")
		// Its owner, configured as documented, shares it; then uid 1001 gets in.
		a := startAs(tc, bin, uid1000, shared)
		require.Equal(t, "leader", a.joined().Role)
		uid, gid, perm := owner(t, lockPath)
		require.Equal(t, []any{uint32(1000), uint32(sharedGID), fs.FileMode(0o660)}, []any{uid, gid, perm})
		require.Equal(t, "follower", startAs(tc, bin, uid1001, shared).joined().Role)
	})
}

// A member that never leads needs only to reach the socket: search permission on Dir.
// Without it, it is told about the Dir.
func TestProcessDirALeadNeverMemberCannotSearch(t *testing.T) {
	tc, bin := sharedVolume(t, 0o750)
	p := tc.start(memberOpts{bin: bin, lead: "never", attr: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}})
	e := joinError(t, p)
	require.Equal(t, "config", e.Kind, e.Err)
	require.Contains(t, e.Err, "this process may not reach the files in "+tc.dir)
}
