//go:build linux

package cluster_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/internal/member"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

// Members in containers: each member runs in namespaces of its own, as a container
// does, and the members share nothing but one directory bind-mounted into each (the
// volume). The test binary is re-executed with SysProcAttr.Cloneflags, so each member
// is the init (pid 1) of its own pid namespace; in its own mount namespace it makes
// every mount private, mounts a private tmpfs as its "root filesystem" (the same path
// in every member, different contents), bind-mounts the volume into it, mounts its own
// /proc and sets its own host name. The mounts vanish with the member's mount
// namespace; the test checks that none leaked into its own.

// containerNS are the namespaces a container has of its own besides its network one.
const containerNS = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC

func init() {
	roles["nsmember"] = nsMemberMain
	roles["nsprobe"] = nsProbeMain
}

// nsSetup prepares a member's namespaces as ns says (see nsSpec).
func nsSetup(ns *nsSpec) error {
	if ns.Mnt {
		info := nsInfo()
		if info["mnt"] == "" || info["mnt"] == ns.ParentMnt {
			return fmt.Errorf("not in a mount namespace of its own (mnt %q): refusing to mount", info["mnt"])
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("making every mount private: %w", err)
		}
		if root := ns.Root; root != "" {
			if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=4m"); err != nil {
				return fmt.Errorf("mounting the private root %s: %w", root, err)
			}
			vol := filepath.Join(root, "volume")
			if err := os.Mkdir(vol, 0o755); err != nil {
				return err
			}
			if err := unix.Mount(ns.Volume, vol, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind-mounting the volume at %s: %w", vol, err)
			}
			if err := os.WriteFile(filepath.Join(root, "private"), []byte(ns.Host), 0o644); err != nil {
				return err
			}
		}
		if ns.Proc {
			if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return fmt.Errorf("mounting /proc: %w", err)
			}
		}
	}
	if ns.Host != "" {
		if err := unix.Sethostname([]byte(ns.Host)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if ns.Net {
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("bringing lo up: %w", err)
		}
	}
	return nil
}

// nsTeardown unmounts what nsSetup mounted (the namespace would drop it anyway when its
// last process exits).
func nsTeardown(ns *nsSpec) {
	if !ns.Mnt {
		return
	}
	if ns.Proc {
		_ = unix.Unmount("/proc", unix.MNT_DETACH)
	}
	if root := ns.Root; root != "" {
		_ = unix.Unmount(filepath.Join(root, "volume"), unix.MNT_DETACH)
		_ = unix.Unmount(root, unix.MNT_DETACH)
	}
}

// loopbackUp sets IFF_UP on lo: a new network namespace starts with it down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// nsInfo names this process's namespaces by inode: {"mnt": "4026531841", ...}.
func nsInfo() map[string]string {
	out := map[string]string{}
	for _, kind := range []string{"mnt", "pid", "uts", "ipc", "net"} {
		link, err := os.Readlink("/proc/self/ns/" + kind)
		if err != nil {
			continue
		}
		_, ino, _ := strings.Cut(link, "[")
		out[kind] = strings.TrimSuffix(ino, "]")
	}
	return out
}

// nsEvent is the report of a member in namespaces of its own, before it joins.
type nsEvent struct {
	Ev   string            `json:"ev"` // "ns"
	PID  int               `json:"pid"`
	Host string            `json:"host"`
	NS   map[string]string `json:"ns"` // its namespaces: "mnt" -> "4026531841", ...
}

// nsMemberMain is a member in namespaces of its own: it sets them up as args.NS says and
// reports them, then runs as memberMain does.
func nsMemberMain(cfg member.Config, args memberArgs) int {
	if args.NS == nil {
		fmt.Fprintln(os.Stderr, "the nsmember role needs Args.NS")
		return 2
	}
	set := false // tear down only what was set up: never the test's own mounts
	defer func() {
		if set {
			nsTeardown(args.NS)
		}
	}()
	return member.Main(cfg, testProgram(args, func(m *member.Member) error {
		if err := nsSetup(args.NS); err != nil {
			return fmt.Errorf("namespaces: %w", err)
		}
		set = true
		host, _ := os.Hostname()
		m.Emit(nsEvent{Ev: "ns", PID: os.Getpid(), Host: host, NS: nsInfo()})
		return nil
	}))
}

// nsProbeMain sets namespaces up as nsMemberMain does and prints "ok", or the error.
func nsProbeMain(_ member.Config, args memberArgs) int {
	if err := nsSetup(args.NS); err != nil {
		fmt.Println(err)
		return 0
	}
	nsTeardown(args.NS)
	fmt.Println("ok")
	return 0
}

var nsProbes sync.Map // Cloneflags -> skip reason ("" when supported)

// needNamespaces skips t unless this process may start members in namespaces flags and
// set them up (mounts, host name, loopback).
func needNamespaces(t *testing.T, flags uintptr) {
	t.Helper()
	if os.Geteuid() != 0 {
		// Counted as used: they would run with root, and a skip is not a failure.
		usedMu.Lock()
		usedRoles["nsmember"], usedRoles["nsprobe"] = true, true
		usedMu.Unlock()
		t.Skip("needs root (CAP_SYS_ADMIN) to create mount, pid, uts, ipc and network namespaces")
	}
	reason, ok := nsProbes.Load(flags)
	if !ok {
		reason = probeNamespaces(t, flags)
		nsProbes.Store(flags, reason)
	}
	if reason != "" {
		usedMu.Lock()
		usedRoles["nsmember"] = true
		usedMu.Unlock()
		t.Skip(reason)
	}
}

func probeNamespaces(t *testing.T, flags uintptr) string {
	base, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(base)
	require.NoError(t, os.Mkdir(filepath.Join(base, "root"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(base, "vol"), 0o700))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnviron(t, "nsprobe", member.Config{}, memberArgs{NS: nsSpecOf(flags, filepath.Join(base, "root"), filepath.Join(base, "vol"), "probe")}))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("the kernel refused to create namespaces %#x (unshare refused; nested in a container without CAP_SYS_ADMIN, or user.max_*_namespaces=0?): %v %s", flags, err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "ok" {
		return fmt.Sprintf("namespaces %#x were created but could not be set up: %s", flags, s)
	}
	return ""
}

// nsSpecOf is what has a member set up the namespaces flags.
func nsSpecOf(flags uintptr, root, volume, host string) *nsSpec {
	ns := &nsSpec{Host: host}
	if flags&syscall.CLONE_NEWNS != 0 {
		ns.Mnt, ns.ParentMnt = true, nsInfo()["mnt"]
		if root != "" {
			ns.Root, ns.Volume = root, volume
		}
		ns.Proc = flags&syscall.CLONE_NEWPID != 0
	}
	ns.Net = flags&syscall.CLONE_NEWNET != 0
	return ns
}

// volumeHost is the host side of containers sharing a volume: base/volume is the
// volume, base/root the mount point of each container's private root filesystem,
// where the volume appears at root/volume (the members' Dir).
type volumeHost struct {
	t      *testing.T
	flags  uintptr
	base   string
	root   string
	volume string // the volume, as the host sees it
}

// newVolumeHost prepares a volume for members in namespaces flags and a test cluster
// whose Dir is the volume as the members see it. It checks at cleanup that no mount
// leaked into the test's own mount namespace.
func newVolumeHost(t *testing.T, flags uintptr, transport string) (*volumeHost, *testCluster) {
	t.Helper()
	needNamespaces(t, flags)
	base, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	h := &volumeHost{t: t, flags: flags, base: base, root: filepath.Join(base, "root"), volume: filepath.Join(base, "volume")}
	require.NoError(t, os.Mkdir(h.root, 0o755))
	require.NoError(t, os.Mkdir(h.volume, 0o700))
	t.Cleanup(func() {
		// Runs after the members' cleanups (killed and reaped): their mounts are gone.
		b, err := os.ReadFile("/proc/self/mountinfo")
		require.NoError(t, err)
		require.NotContains(t, string(b), base, "a member's mount leaked into the test's mount namespace")
		os.RemoveAll(base)
	})
	up, err := upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { up.Close() })
	tc := &testCluster{t: t, dir: filepath.Join(h.root, "volume"), name: "svc", upstream: up, transport: transport}
	if transport == "tcp" {
		tc.port = freePort(t)
	}
	return h, tc
}

// start starts a member in a container of its own named host; it waits for the member's
// namespace report and checks it.
func (h *volumeHost) start(tc *testCluster, host string, o memberOpts) *proc {
	h.t.Helper()
	o.role = "nsmember"
	o.attr = &syscall.SysProcAttr{Cloneflags: h.flags}
	o.args.NS = nsSpecOf(h.flags, h.root, h.volume, host)
	p := tc.start(o)
	ev := p.wait(func(e event) bool { return e.Ev == "ns" || e.Ev == "join-error" })
	require.Equal(h.t, "ns", ev.Ev, "member %s: %s", host, ev.Err)
	var e nsEvent
	require.NoError(h.t, json.Unmarshal(ev.Line, &e))
	require.Equal(h.t, host, e.Host)
	self := nsInfo()
	for kind, flag := range map[string]uintptr{"mnt": syscall.CLONE_NEWNS, "pid": syscall.CLONE_NEWPID, "uts": syscall.CLONE_NEWUTS, "ipc": syscall.CLONE_NEWIPC, "net": syscall.CLONE_NEWNET} {
		if h.flags&flag != 0 {
			require.NotEqual(h.t, self[kind], e.NS[kind], "member %s shares the test's %s namespace", host, kind)
		} else {
			require.Equal(h.t, self[kind], e.NS[kind], "member %s has a %s namespace of its own", host, kind)
		}
	}
	if h.flags&syscall.CLONE_NEWPID != 0 {
		require.Equal(h.t, 1, e.PID, "member %s is not the init of its pid namespace", host)
	}
	return p
}

// whoami asks the Leader, through p, for its host name and pid (as it sees its pid).
func whoami(t *testing.T, p *proc) string {
	t.Helper()
	r := p.do(command{Op: "invoke", Name: "whoami"})
	require.Empty(t, r.Err)
	return r.Data
}

// awaitLeaderByTerm waits until exactly one member leads in a term after oldTerm and
// every other member follows that term, and checks that every member's calls reach that
// Leader (whoami names its host). It identifies the Leader by its term and host name,
// never by pid: every member here may be pid 1. Two Leaders at once fail at once.
func awaitLeaderByTerm(t *testing.T, ps []*proc, hosts map[*proc]string, oldTerm uint64) (*proc, uint64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var leader *proc
		var term uint64
		roles := make([]event, len(ps))
		for i, p := range ps {
			roles[i] = p.role()
			if roles[i].Role == "leader" {
				require.Nil(t, leader, "two leaders at once: %s and %s", hosts[p], hosts[leader])
				leader, term = p, roles[i].Term
			}
		}
		settled := leader != nil && term > oldTerm
		for i, r := range roles {
			if settled && ps[i] != leader && (r.Role != "follower" || r.Term != term) {
				settled = false
			}
		}
		if settled {
			for _, p := range ps {
				answer := strings.Fields(whoami(t, p))
				require.Equal(t, hosts[leader], answer[0], "member %s reaches another leader", hosts[p])
			}
			return leader, term
		}
		if time.Now().After(deadline) {
			t.Fatalf("no settled leader after term %d: %+v", oldTerm, roles)
		}
		time.Sleep(time.Millisecond)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestNamespacesOneLeaderAcrossContainers: three members, each in mount, pid, uts and ipc
// namespaces of its own (so each is pid 1), sharing only a bind-mounted volume, elect one
// Leader, call and subscribe through it, and fail over when the Leader's namespace init
// is killed with SIGKILL, on both transports (TCP with a shared network namespace).
func TestNamespacesOneLeaderAcrossContainers(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			h, tc := newVolumeHost(t, containerNS, tr)
			hosts := map[*proc]string{}
			var ps []*proc
			for i := range 3 {
				host := fmt.Sprintf("worker-%d", i+1)
				p := h.start(tc, host, memberOpts{})
				hosts[p] = host
				ps = append(ps, p)
			}
			for _, p := range ps {
				e := p.joined()
				// Every member is pid 1 and says its Leader is pid 1: pids say nothing here.
				require.Equal(t, 1, e.PID)
				require.Equal(t, 1, e.LeaderPID)
			}
			leader, term := awaitLeaderByTerm(t, ps, hosts, 0)
			for _, p := range ps {
				require.Equal(t, hosts[leader]+" 1", whoami(t, p), "the leader is pid 1 in its own namespace")
			}

			// Calls from every container reach the one upstream connection.
			for _, p := range ps {
				r := p.do(command{Op: "invoke", Name: "echo", Data: "from " + hosts[p]})
				require.Empty(t, r.Err)
				require.Equal(t, "from "+hosts[p], r.Data)
			}
			require.Equal(t, 1, tc.upstream.MaxConns(), "the upstream saw more than one connection at once")
			require.Equal(t, 1, tc.upstream.TotalConns())

			// One upstream subscription for the subscribers of every container.
			subs := map[*proc]int{}
			for _, p := range ps {
				r := p.do(command{Op: "subscribe", Name: "news"})
				require.Empty(t, r.Err)
				subs[p] = r.ID
			}
			require.Equal(t, 1, tc.upstream.Subscribers("news"))
			require.Equal(t, 1, tc.upstream.Push("news", []byte("before")))
			for _, p := range ps {
				p.waitMessage(subs[p], "before")
			}

			lockPath := filepath.Join(h.volume, tc.name+".lock")
			lockIno := inode(t, lockPath)
			var sockIno uint64
			if tr == "unix" {
				sockIno = inode(t, filepath.Join(h.volume, tc.name+".sock"))
			}

			// SIGKILL the Leader's namespace init: its whole container dies at once.
			leader.Kill()
			rest := without(ps, leader)
			newLeader, newTerm := awaitLeaderByTerm(t, rest, hosts, term)
			require.NotEqual(t, hosts[leader], hosts[newLeader])

			tc.awaitNewSubscriber(t, "news", 2)
			require.Equal(t, 1, tc.upstream.Push("news", []byte("after")))
			for _, p := range rest {
				p.waitMessage(subs[p], "after")
				r := p.do(command{Op: "invoke", Name: "echo", Data: "again"})
				require.Empty(t, r.Err)
				require.Equal(t, "again", r.Data)
			}

			// The lock file is the same file (never deleted); the dead Leader's socket
			// was replaced by the new Leader's; the TCP token names the new term.
			require.Equal(t, lockIno, inode(t, lockPath), "the lock file was replaced")
			switch tr {
			case "unix":
				require.NotEqual(t, sockIno, inode(t, filepath.Join(h.volume, tc.name+".sock")), "the dead leader's socket is still in place")
			case "tcp":
				b, err := os.ReadFile(filepath.Join(h.volume, tc.name+".token"))
				require.NoError(t, err)
				require.Contains(t, string(b), fmt.Sprintf("term=%d pid=1 ", newTerm))
			}
			for _, p := range rest {
				p.exit()
			}
			_, err := os.Lstat(lockPath)
			require.NoError(t, err, "the lock file is gone after every member left")
		})
	}
}

// TestNamespacesStaleStateOfACrashedContainer: a container whose Leader was killed leaves
// its socket (or its token file) and the lock file on the volume; the next container to
// start leads in a new term without anyone cleaning up, and the lock file is never
// deleted or replaced.
func TestNamespacesStaleStateOfACrashedContainer(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			h, tc := newVolumeHost(t, containerNS, tr)
			crashed := h.start(tc, "crashed", memberOpts{})
			e := crashed.joined()
			require.Equal(t, "leader", e.Role)
			require.Equal(t, uint64(1), e.Term)
			crashed.Kill()

			lockPath := filepath.Join(h.volume, tc.name+".lock")
			lockIno := inode(t, lockPath)
			sock := filepath.Join(h.volume, tc.name+".sock")
			tokenPath := filepath.Join(h.volume, tc.name+".token")
			var staleToken []byte
			switch tr {
			case "unix":
				// The dead Leader's socket is still there, refusing connections; so is a
				// staging socket a Leader could have left mid-bind.
				_, err := net.Dial("unix", sock)
				require.ErrorIs(t, err, syscall.ECONNREFUSED)
				staging := sock[:len(sock)-1] + "~"
				ln, err := net.Listen("unix", staging)
				require.NoError(t, err)
				ln.(*net.UnixListener).SetUnlinkOnClose(false)
				require.NoError(t, ln.Close())
			case "tcp":
				var err error
				staleToken, err = os.ReadFile(tokenPath)
				require.NoError(t, err)
				require.Contains(t, string(staleToken), "term=1 ")
			}

			fresh := h.start(tc, "fresh", memberOpts{})
			e = fresh.joined()
			require.Equal(t, "leader", e.Role, "the next container did not lead over the stale state")
			require.Equal(t, uint64(2), e.Term)
			late := h.start(tc, "late", memberOpts{})
			e = late.joined()
			require.Equal(t, "follower", e.Role)
			require.Equal(t, uint64(2), e.Term)
			require.Equal(t, "fresh 1", whoami(t, late))

			require.Equal(t, lockIno, inode(t, lockPath), "the lock file was replaced")
			switch tr {
			case "unix":
				c, err := net.Dial("unix", sock)
				require.NoError(t, err, "the stale socket was not replaced by a live one")
				c.Close()
				_, err = os.Lstat(sock[:len(sock)-1] + "~")
				require.ErrorIs(t, err, os.ErrNotExist, "the stale staging socket is still there")
			case "tcp":
				b, err := os.ReadFile(tokenPath)
				require.NoError(t, err)
				require.Contains(t, string(b), "term=2 ")
				require.NotEqual(t, string(staleToken), string(b))
			}
		})
	}
}

// TestNamespacesNetwork: the Unix transport works across network namespaces (a socket
// file on a shared volume is not a network object), and the TCP transport across them is
// refused with an error that says why, instead of electing a Leader in each.
func TestNamespacesNetwork(t *testing.T) {
	const flags = syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS
	t.Run("unix", func(t *testing.T) {
		h, tc := newVolumeHost(t, flags, "unix")
		tc.dir = h.volume // no mount namespace: the volume is at the same path everywhere
		hosts := map[*proc]string{}
		var ps []*proc
		for _, host := range []string{"net-a", "net-b", "net-c"} {
			p := h.start(tc, host, memberOpts{local: true})
			hosts[p] = host
			ps = append(ps, p)
		}
		for _, p := range ps {
			p.joined()
		}
		leader, term := awaitLeaderByTerm(t, ps, hosts, 0)
		subs := map[*proc]int{}
		for _, p := range ps {
			r := p.do(command{Op: "subscribe", Name: "t"})
			require.Empty(t, r.Err)
			subs[p] = r.ID
		}
		require.Empty(t, ps[2].do(command{Op: "publish", Name: "t", Data: "one"}).Err)
		for _, p := range ps {
			p.waitMessage(subs[p], "one")
		}
		leader.Kill()
		rest := without(ps, leader)
		awaitLeaderByTerm(t, rest, hosts, term)
		require.Empty(t, rest[0].do(command{Op: "publish", Name: "t", Data: "two"}).Err)
		for _, p := range rest {
			p.waitMessage(subs[p], "two")
		}
	})
	t.Run("tcp", func(t *testing.T) {
		h, tc := newVolumeHost(t, flags, "tcp")
		tc.dir = h.volume
		a := h.start(tc, "net-a", memberOpts{local: true})
		require.Equal(t, "leader", a.joined().Role)
		// net-b binds the same port on its own 127.0.0.1; without the guard it would lead too.
		b := h.start(tc, "net-b", memberOpts{local: true, joinTimeout: "20s"})
		e := b.wait(func(e event) bool { return e.Ev == "joined" || e.Ev == "join-error" })
		require.Equal(t, "join-error", e.Ev, "a second leader in another network namespace: %+v", e)
		t.Logf("refused as it should be: %s", e.Err)
		require.Contains(t, e.Err, "network namespace")
		require.Contains(t, e.Err, "Config.Transport")
		require.Equal(t, "leader", a.role().Role)
		require.True(t, strings.HasPrefix(whoami(t, a), "net-a "))
	})
}
