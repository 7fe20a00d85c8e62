//go:build linux

package container

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/examples/internal/exampletest"
)

var containerKills = flag.Int("containers.kills", 3, "how many times TestPodman SIGKILLs the Leader's container to measure failover")

// requirePodman, once set (.ci/run sets it after installing podman), turns every reason
// for which TestPodman would skip (no engine, an engine that cannot run a container on
// this machine) into a failure.
const requirePodman = "CLUSTER_REQUIRE_PODMAN"

// waitLimit bounds every wait of TestPodman for the containers.
const waitLimit = time.Minute

// TestPodman runs the worker image under a real container engine, rootful podman, the
// way compose.yaml does: an image FROM scratch holding the statically built worker and
// upstream programs and
// /run/cluster (root, group 2000, 2770), four replicas (three as uid 1000:2000, one as
// uid 1001 with 2000 as a supplementary group), each pid 1 in its own pid, mount and
// network namespaces on a podman bridge network, sharing one named volume at
// /run/cluster. It checks one Leader and one upstream connection, failover after
// "podman kill -s KILL" of the Leader's container, a replica restarted onto the volume,
// failover measured over -containers.kills SIGKILLs, a graceful handover on
// "podman stop", and the refusal of a uid outside the shared group.
//
// The upstream server is a container of the same image on the same network, as in
// compose.yaml; it logs its connections (open, ever, most at once), which the test reads.
//
// Everything podman writes for the test (storage, volumes, state) lives in a temporary
// directory, configured through CONTAINERS_CONF and podman's --root and --runroot, and
// is removed afterwards, whether the test passes or not, with the test's network, whose
// definition is kept beside those of other runs (see newEngine).
func TestPodman(t *testing.T) {
	p := newPodman(t)
	workers := []*container{
		p.worker("worker-1", "1000:2000"),
		p.worker("worker-2", "1000:2000"),
		p.worker("worker-3", "1000:2000"),
		p.worker("worker-other-uid", "1001:1001", "--group-add", "2000"),
	}
	leaderships := 0 // the upstream should see one connection per leadership

	leader, term := settled(t, workers, 0)
	leaderships++
	for _, w := range workers {
		_, ok := w.find(0, func(l logLine) bool { return l.Msg == "joined" && l.PID == 1 })
		require.True(t, ok, "%s is not pid 1 in its container", w.name)
	}
	p.distinctNamespaces(workers)
	lock := filepath.Join(p.must("volume", "inspect", "--format", "{{.Mountpoint}}", p.volume), "demo.lock")
	lockIno := inode(t, lock)

	// One connection upstream, and one subscription for all the replicas, each of which
	// gets the pushes.
	var conns logLine
	waitUntil(t, "the upstream logs the Leader's connection", func() bool {
		conns, _ = p.upstream.last(func(l logLine) bool { return l.Msg == "upstream connections" })
		return conns.Ever > 0
	})
	require.Equal(t, []int{1, 1}, []int{conns.Open, conns.Ever}, "connections upstream, open and ever: %+v", conns)
	var push logLine
	waitUntil(t, "the upstream pushes a config", func() bool {
		push, _ = p.upstream.last(func(l logLine) bool { return l.Msg == "pushed config" })
		return push.Version > 0
	})
	require.Equal(t, 1, push.Subscribed, "subscribed connections upstream")
	for _, w := range workers {
		waitUntil(t, w.name+" receives the push", func() bool {
			_, ok := w.find(0, func(l logLine) bool { return l.Msg == "config" && l.Data == fmt.Sprintf("v%d", push.Version) })
			return ok
		})
	}

	// podman kill -s KILL: the Leader's container dies outright; another replica leads.
	t0 := time.Now()
	p.must("kill", "--signal", "KILL", leader.name)
	require.Equal(t, 137, leader.exit(t), "%s's exit status after SIGKILL", leader.name)
	survivors := others(workers, leader)
	_, next := settled(t, survivors, term)
	leaderships++
	first, all := servedAt(survivors, next)
	t.Logf("podman kill -s KILL %s (the Leader of term %d): term %d served every survivor %v after the command started (podman's own start-up included; the first survivor after %v)",
		leader.name, term, next, all.Sub(t0).Round(100*time.Microsecond), first.Sub(t0).Round(100*time.Microsecond))
	term = next

	// The killed replica, restarted onto the same volume, joins as a Follower: nothing
	// was cleaned up (its dead socket was replaced by the new Leader).
	p.restart(leader, term)

	// Failover measured: SIGKILL of the Leader container's pid 1 (what podman kill -s KILL
	// sends, timed here from the signal itself) until every survivor is served again.
	var fails, firsts, elected []time.Duration
	for range *containerKills {
		leader, _ = current(t, workers, term)
		pid := p.hostPID(leader)
		t0 := time.Now()
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		require.Equal(t, 137, leader.exit(t), "%s's exit status after SIGKILL", leader.name)
		survivors := others(workers, leader)
		newLeader, next := settled(t, survivors, term)
		leaderships++
		first, all := servedAt(survivors, next)
		fails, firsts = append(fails, all.Sub(t0)), append(firsts, first.Sub(t0))
		won, _ := newLeader.find(0, func(l logLine) bool { return l.Msg == "role" && l.Role == "leader" && l.Term == next })
		elected = append(elected, won.Time.Sub(t0))
		term = next
		p.restart(leader, term)
	}
	if len(fails) > 0 {
		t.Logf("failover across containers, SIGKILL of the Leader's container -> every survivor served, %d kills: p50 %v, min %v, max %v (the new Leader in office: p50 %v; the first survivor served: p50 %v); each: %v",
			len(fails), pct(fails, .5), pct(fails, 0), pct(fails, 1), pct(elected, .5), pct(firsts, .5), roundAll(fails))
	}

	// podman stop (SIGTERM): the Leader closes its Client and hands over; no call is lost.
	leader, _ = current(t, workers, term)
	marks := map[*container]int{}
	for _, w := range workers {
		marks[w] = w.mark()
	}
	p.must("stop", "--time", "30", leader.name)
	require.Equal(t, 0, leader.exit(t), "%s's exit status after podman stop", leader.name)
	_, ok := leader.find(marks[leader], func(l logLine) bool { return l.Msg == "closed" })
	require.True(t, ok, "%s did not close its Client on SIGTERM", leader.name)
	survivors = others(workers, leader)
	_, next = settled(t, survivors, term)
	leaderships++
	term = next
	for _, w := range workers {
		l, lost := w.find(marks[w], func(l logLine) bool {
			return l.Msg == "incr lost with the leader" || strings.Contains(l.Err, cluster.ErrLeaderLost.Error())
		})
		require.False(t, lost, "%s lost a call in a graceful handover: %+v", w.name, l)
	}

	// A container of a uid outside the shared group is refused, naming the group.
	stranger := p.start(p.workerArgs("stranger", "1003:3000")...)
	require.Equal(t, 1, stranger.exit(t), "the exit status of a replica of uid 1003, gid 3000")
	l, ok := stranger.find(0, func(l logLine) bool { return l.Msg == "exiting" })
	require.True(t, ok, "the replica of uid 1003 did not say why it exits")
	require.Contains(t, l.Err, cluster.ErrConfig.Error())
	require.Contains(t, l.Err, "this process runs as uid 1003, gid 3000")
	require.Contains(t, l.Err, "this process must belong to group 2000, the group Config.AllowGIDs [2000] shares Dir with")
	_, after := current(t, survivors, term)
	require.Equal(t, term, after, "the refused replica changed the leadership")

	require.Equal(t, lockIno, inode(t, lock), "the lock file on the volume was replaced")

	// The upstream's final count, once it has judged the last connections.
	p.must("stop", "--time", "30", p.upstream.name)
	require.Equal(t, 0, p.upstream.exit(t), "the upstream's exit status")
	final, ok := p.upstream.last(func(l logLine) bool { return l.Msg == "upstream stopped" })
	require.True(t, ok, "the upstream did not log its final count")
	require.Equal(t, 1, final.MostAtOnce, "the upstream saw more than one connection at once: %s", final.Overlap)
	require.Equal(t, leaderships, final.Ever, "upstream connections, one per leadership")
}

// podman runs podman commands against storage, state and configuration of the test's
// own, and removes what they made when the test ends.
type podman struct {
	t       *testing.T
	dir     string   // the engine's storage, state and configuration
	global  []string // podman's flags before each command
	env     []string
	image   string
	network string // the network the test made, removed at its end
	volume  string

	upstream *container
	upAddr   string // the upstream's address on the network

	mu         sync.Mutex
	containers []*container
}

// unavailable skips the test, saying why the engine cannot be used, or fails it when
// requirePodman is set.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv(requirePodman) != "" {
		t.Fatalf("%s is set (podman was installed), yet %s", requirePodman, reason)
	}
	t.Skip(reason)
}

// newEngine returns a podman whose storage, state and configuration are the test's own,
// in a temporary directory removed when the test ends, with everything podman made
// there; or skips the test, saying why podman cannot be used.
func newEngine(t *testing.T) *podman {
	if _, err := exec.LookPath("podman"); err != nil {
		unavailable(t, "no container engine: podman is not installed (%v)", err)
	}
	if os.Geteuid() != 0 {
		unavailable(t, "the replicas run as uids 1000, 1001 and 1003 under rootful podman, which needs root; this test runs as uid %d", os.Geteuid())
	}
	dir, err := os.MkdirTemp("", "cluster-podman-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })

	// Settings for this machine and any like it, and only for the test's own podman:
	// runc when it is installed (crun refuses some hosts' hybrid cgroup layouts), cgroups
	// through cgroupfs (no systemd needed), and no default ulimits (a sandbox may not
	// let a container raise RLIMIT_NOFILE or RLIMIT_NPROC). The network definitions are
	// kept in one directory for every run of these tests: a network's bridge and subnet
	// are chosen among the networks podman knows of (and the bridges that exist), so
	// that runs at the same time, each with a network of its own, must know of each
	// other's. Each run removes its own network; the directory keeps podman's lock files.
	networks := filepath.Join(os.TempDir(), "cluster-podman-networks")
	require.NoError(t, os.MkdirAll(networks, 0o700))
	runtimeSetting := ""
	if _, err := exec.LookPath("runc"); err == nil {
		runtimeSetting = `runtime = "runc"` + "\n"
	}
	conf := filepath.Join(dir, "containers.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[containers]
default_ulimits = []

[network]
network_config_dir = %q

[engine]
%scgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = %q
`, networks, runtimeSetting, filepath.Join(dir, "tmp"))), 0o600))
	p := &podman{
		t:   t,
		dir: dir,
		// vfs: plain directories, which any filesystem holds and nothing has to unmount.
		global: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"},
		env:    append(os.Environ(), "CONTAINERS_CONF="+conf),
	}
	t.Cleanup(p.removeAll)
	t.Cleanup(func() {
		if t.Failed() {
			p.dump()
		}
	})
	return p
}

// newPodman returns an engine that runs the worker image, with a network, a volume and
// the upstream server for the replicas; or skips the test, saying why it cannot.
func newPodman(t *testing.T) *podman {
	p := newEngine(t)
	suffix := randomSuffix(t)
	p.image = "localhost/cluster-worker-test:" + suffix
	p.volume = "cluster-test-" + suffix

	// The image: the worker and the upstream server, built static, as the Dockerfile puts
	// them in /usr/local/bin (worker the default command), and /run/cluster prepared as
	// the Dockerfile
	// does. It is imported from a tar written here rather than built, because podman
	// build's COPY drops the directory's set-group-ID bit.
	bin := filepath.Join(p.dir, "bin")
	build := exec.Command(exampletest.Go(t), "build", "-trimpath", "-buildvcs=false", "-o", bin+"/", "./worker", "./upstream")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building the worker and the upstream: %s", out)
	tarball := filepath.Join(p.dir, "image.tar")
	writeImage(t, tarball, bin)
	if _, err := p.run("import", "--change", "ENV PATH=/usr/local/bin", "--change", `CMD ["worker"]`, "--change", "USER 1000:2000", tarball, p.image); err != nil {
		unavailable(t, "podman cannot import an image on this machine: %v", err)
	}
	network := "cluster-test-" + suffix
	p.network = network
	if _, err := p.run("network", "create", "--disable-dns", network); err != nil {
		unavailable(t, "podman cannot create a network on this machine: %v", err)
	}
	if _, err := p.run("run", "--rm", "--network", network, p.image, "upstream", "-h"); err != nil {
		unavailable(t, "podman cannot run a container on this machine: %v", err)
	}
	p.must("volume", "create", p.volume)

	// The upstream, reached by its address on the network (the network has no DNS).
	p.upstream = p.start("run", "--name", "upstream", "--network", network, "--env", "LOG_FORMAT=json", "--log-driver", "passthrough", p.image, "upstream", "-listen", ":7070")
	waitUntil(t, "the upstream listens", func() bool {
		_, ok := p.upstream.find(0, func(l logLine) bool { return l.Msg == "upstream listening" })
		return ok
	})
	ip := p.must("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", p.upstream.name)
	require.NotNil(t, net.ParseIP(ip), "the upstream's address on %s: %q", network, ip)
	p.upAddr = net.JoinHostPort(ip, "7070")
	return p
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// writeImage writes an image's single layer: /usr/local/bin/worker and
// /usr/local/bin/upstream from the directory bin, and /run/cluster, root-owned, group
// 2000, mode 2770, which a fresh named volume mounted there copies.
func writeImage(t *testing.T, path, bin string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Now()
	for _, h := range []*tar.Header{
		{Name: "run/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod},
		{Name: "run/cluster/", Typeflag: tar.TypeDir, Mode: 0o2770, Gid: 2000, ModTime: mod},
		{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod},
		{Name: "usr/local/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod},
		{Name: "usr/local/bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod},
	} {
		require.NoError(t, tw.WriteHeader(h))
	}
	for _, name := range []string{"worker", "upstream"} {
		b, err := os.ReadFile(filepath.Join(bin, name))
		require.NoError(t, err)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: "usr/local/bin/" + name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(b)), ModTime: mod}))
		_, err = tw.Write(b)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

func (p *podman) command(args ...string) *exec.Cmd {
	cmd := exec.Command("podman", append(slices.Clone(p.global), args...)...)
	cmd.Env = p.env
	return cmd
}

// run runs a podman command to its end and returns what it printed, trimmed.
func (p *podman) run(args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := p.command(args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// exists reports whether podman knows the object ("network", "volume") of that name.
func (p *podman) exists(object, name string) bool {
	_, err := p.run(object, "exists", name)
	return err == nil
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	require.NoError(p.t, err)
	return out
}

// workerArgs is "podman run" of a replica as compose.yaml starts one: as user, on the
// network and the shared volume, calling the upstream every 2 ms (so that a failover is
// timed to a few milliseconds), logging in JSON only the calls whose outcome changed.
func (p *podman) workerArgs(name, user string, extra ...string) []string {
	args := []string{"run", "--name", name, "--network", p.network, "--volume", p.volume + ":/run/cluster", "--user", user,
		"--env", "CLUSTER_DIR=/run/cluster", "--env", "CLUSTER_NAME=demo", "--env", "CLUSTER_ALLOW_GIDS=2000",
		"--env", "UPSTREAM_ADDR=" + p.upAddr, "--env", "WORK_INTERVAL=2ms", "--env", "LOG_CALLS=changes", "--env", "LOG_FORMAT=json", "--log-driver", "passthrough"}
	return append(append(args, extra...), p.image)
}

// worker starts a replica; its name is unique to the test.
func (p *podman) worker(name, user string, extra ...string) *container {
	return p.start(p.workerArgs(name, user, extra...)...)
}

// start runs "podman args..." (run, or start --attach) attached, reading the
// container's output until it ends.
func (p *podman) start(args ...string) *container {
	p.t.Helper()
	c := &container{name: args[slices.Index(args, "--name")+1]}
	p.mu.Lock()
	p.containers = append(p.containers, c)
	p.mu.Unlock()
	require.NoError(p.t, c.attach(p.command(args...)))
	return c
}

// restart starts c again, onto the same volume, and waits until it follows term and
// has been served.
func (p *podman) restart(c *container, term uint64) {
	p.t.Helper()
	mark := c.mark()
	require.NoError(p.t, c.attach(p.command("start", "--attach", c.name)))
	waitUntil(p.t, c.name+" rejoins as a Follower and is served", func() bool {
		_, joined := c.find(mark, func(l logLine) bool { return l.Msg == "joined" && l.Role == "follower" && l.Term == term })
		_, served := c.find(mark, func(l logLine) bool { return l.Msg == "incr" && l.Term == term })
		role, tm := c.role()
		return joined && served && role == "follower" && tm == term
	})
}

// hostPID is the pid of c's pid 1 as the host sees it.
func (p *podman) hostPID(c *container) int {
	p.t.Helper()
	pid, err := strconv.Atoi(p.must("inspect", "--format", "{{.State.Pid}}", c.name))
	require.NoError(p.t, err)
	require.Positive(p.t, pid, "%s is not running", c.name)
	return pid
}

// distinctNamespaces checks that each container has pid, mount and network namespaces
// of its own, shared neither with another nor with the test.
func (p *podman) distinctNamespaces(cs []*container) {
	p.t.Helper()
	for _, ns := range []string{"pid", "mnt", "net"} {
		self, err := os.Readlink("/proc/self/ns/" + ns)
		require.NoError(p.t, err)
		seen := map[string]string{self: "the test"}
		for _, c := range cs {
			id, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", p.hostPID(c), ns))
			require.NoError(p.t, err)
			require.NotContains(p.t, seen, id, "%s shares its %s namespace with %s", c.name, ns, seen[id])
			seen[id] = c.name
		}
	}
}

// removeAll removes every container, volume, network and image the test made, and
// checks that none is left.
func (p *podman) removeAll() {
	t := p.t
	if _, err := p.run("rm", "--all", "--force", "--time", "0"); err != nil {
		t.Errorf("removing the containers: %v", err)
	}
	p.mu.Lock()
	cs := slices.Clone(p.containers)
	p.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
	if _, err := p.run("volume", "rm", "--all", "--force"); err != nil {
		t.Errorf("removing the volumes: %v", err)
	}
	if p.network != "" {
		if _, err := p.run("network", "rm", "--force", p.network); err != nil && p.exists("network", p.network) {
			t.Errorf("removing the network: %v", err)
		}
	}
	if _, err := p.run("rmi", "--all", "--force"); err != nil {
		t.Errorf("removing the image: %v", err)
	}
	for _, what := range [][]string{{"ps", "--all", "--quiet"}, {"volume", "ls", "--quiet"}, {"images", "--quiet"}} {
		if out, err := p.run(what...); err != nil || out != "" {
			t.Errorf("left after removal (podman %s): %q %v", strings.Join(what, " "), out, err)
		}
	}
	if p.network != "" && p.exists("network", p.network) {
		t.Errorf("network %s left after removal", p.network)
	}
}

// dump logs the end of what each container printed.
func (p *podman) dump() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.containers {
		c.mu.Lock()
		out := c.out[max(0, len(c.out)-40):]
		p.t.Logf("%s, the last %d lines it and podman printed:\n%s", c.name, len(out), strings.Join(out, "\n"))
		c.mu.Unlock()
	}
}

// container is a container run attached by the test; its output is kept over its runs.
type container struct {
	name string

	mu    sync.Mutex
	lines []logLine     // its JSON log lines
	out   []string      // every line it and podman printed
	cmd   *exec.Cmd     // the current run's podman process
	done  chan struct{} // closed when the current run's podman process has ended
}

// attach starts cmd, which runs c attached, and reads its output until it ends.
func (c *container) attach(cmd *exec.Cmd) error {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = stderrOf{c}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l logLine
			ok := json.Unmarshal(sc.Bytes(), &l) == nil
			c.mu.Lock()
			c.out = append(c.out, sc.Text())
			if ok {
				c.lines = append(c.lines, l)
			}
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	return nil
}

// stderrOf keeps what podman writes on its standard error among c's output.
type stderrOf struct{ c *container }

func (w stderrOf) Write(b []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.c.out = append(w.c.out, "podman: "+l)
	}
	return len(b), nil
}

// exit waits for the current run to end and returns the container's exit status.
func (c *container) exit(t *testing.T) int {
	t.Helper()
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("%s still runs after %v", c.name, waitLimit)
	}
	return cmd.ProcessState.ExitCode()
}

// stop waits for the current run's podman process, which ends with the container,
// and kills it if it outlives the container by long.
func (c *container) stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// mark is where the next log line will be.
func (c *container) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// find returns the first log line from index from on that pred accepts.
func (c *container) find(from int, pred func(logLine) bool) (logLine, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines[from:] {
		if pred(l) {
			return l, true
		}
	}
	return logLine{}, false
}

// last returns the last log line that pred accepts.
func (c *container) last(pred func(logLine) bool) (logLine, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.lines) - 1; i >= 0; i-- {
		if pred(c.lines[i]) {
			return c.lines[i], true
		}
	}
	return logLine{}, false
}

// role is the container's latest role and term.
func (c *container) role() (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.lines) - 1; i >= 0; i-- {
		if l := c.lines[i]; l.Msg == "role" {
			return l.Role, l.Term
		}
	}
	return "", 0
}

func others(cs []*container, not *container) []*container {
	return slices.DeleteFunc(slices.Clone(cs), func(c *container) bool { return c == not })
}

// settled waits until, among live, exactly one container leads a term after old, every
// other follows it, and every one has been served in it; it returns the Leader and the
// term. Two Leaders at once fail the test.
func settled(t *testing.T, live []*container, old uint64) (*container, uint64) {
	t.Helper()
	var leader *container
	var term uint64
	var two string
	waitUntil(t, fmt.Sprintf("one Leader after term %d, followed and serving", old), func() bool {
		leader, term = nil, 0
		for _, c := range live {
			if role, tm := c.role(); role == "leader" {
				if leader != nil {
					two = fmt.Sprintf("%s (term %d) and %s (term %d)", leader.name, term, c.name, tm)
					return true
				}
				leader, term = c, tm
			}
		}
		if leader == nil || term <= old {
			return false
		}
		for _, c := range live {
			if role, tm := c.role(); c != leader && (role != "follower" || tm != term) {
				return false
			}
			if _, ok := c.find(0, func(l logLine) bool { return l.Msg == "incr" && l.Term == term }); !ok {
				return false
			}
		}
		return true
	})
	require.Empty(t, two, "two leaders at once")
	return leader, term
}

// current returns the Leader among cs, which must still lead term.
func current(t *testing.T, cs []*container, term uint64) (*container, uint64) {
	t.Helper()
	for _, c := range cs {
		if role, tm := c.role(); role == "leader" {
			require.Equal(t, term, tm, "%s leads another term", c.name)
			return c, tm
		}
	}
	t.Fatalf("no container leads term %d", term)
	return nil, 0
}

// servedAt returns when the first and the last of cs were first served in term.
func servedAt(cs []*container, term uint64) (first, last time.Time) {
	for _, c := range cs {
		l, _ := c.find(0, func(l logLine) bool { return l.Msg == "incr" && l.Term == term })
		if first.IsZero() || l.Time.Before(first) {
			first = l.Time
		}
		if l.Time.After(last) {
			last = l.Time
		}
	}
	return first, last
}

// waitUntil polls cond until it holds, failing the test after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for this in vain: %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

// pct is the nearest-rank percentile q (0: the minimum, 1: the maximum) of ds.
func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := max(0, int(float64(len(s))*q+0.999999)-1)
	return s[min(i, len(s)-1)].Round(100 * time.Microsecond)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Microsecond)
	}
	return out
}
