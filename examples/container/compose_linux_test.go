//go:build linux

package container

import (
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestComposeFileUnderPodmanCompose reads compose.yaml with podman-compose and checks
// that the containers it would start are those TestPodman runs: the upstream and, on
// one network, four replicas mounting one named volume at /run/cluster, three as
// 1000:2000 and one as 1001:1001 with the supplementary group 2000, all allowing gid
// 2000. podman-compose runs without building or starting anything (--dry-run up
// --no-build); the network and the volume it creates on the way are the test's own.
func TestComposeFileUnderPodmanCompose(t *testing.T) {
	if _, err := exec.LookPath("podman-compose"); err != nil {
		unavailable(t, "podman-compose is not installed (%v)", err)
	}
	p := newEngine(t)
	version := podmanComposeVersion(t, p)
	project := "cluster-compose-" + randomSuffix(t)
	p.network = project + "_default" // podman-compose creates it, even in a dry run
	cmd := exec.Command("podman-compose", "--podman-args", strings.Join(p.global, " "), "--project-name", project,
		"--file", "compose.yaml", "--dry-run", "up", "--no-build", "--detach")
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "podman-compose: %s", out)

	// The containers, by name, with the arguments of their "podman run".
	runs := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "podman" || f[1] != "run" {
			continue
		}
		i := slices.IndexFunc(f, func(a string) bool { return strings.HasPrefix(a, "--name=") })
		require.GreaterOrEqual(t, i, 0, "a podman run without --name: %s", line)
		runs[strings.TrimPrefix(f[i], "--name=")] = f[2:]
	}
	name := func(service string, n int) string { return fmt.Sprintf("%s_%s_%d", project, service, n) }
	workers := []string{name("worker", 1), name("worker", 2), name("worker", 3), name("worker-other-uid", 1)}
	want := append([]string{name("upstream", 1)}, workers...)
	got := make([]string, 0, len(runs))
	for n := range runs {
		got = append(got, n)
	}
	require.ElementsMatch(t, want, got, "the containers podman-compose would start:\n%s", out)

	upstream := runs[name("upstream", 1)]
	require.True(t, hasArgs(upstream, "--net", project+"_default"), "upstream's network: %v", upstream)
	require.True(t, hasArgs(upstream, "--network-alias", "upstream"), "upstream's name on the network: %v", upstream)
	require.True(t, hasArgs(upstream, "cluster-worker:demo", "upstream", "-listen", ":7070"), "upstream's image and command: %v", upstream)
	for _, w := range workers {
		args := runs[w]
		for _, pair := range [][2]string{
			{"--net", project + "_default"},
			{"-v", project + "_cluster:/run/cluster"},
			{"-e", "CLUSTER_DIR=/run/cluster"},
			{"-e", "CLUSTER_NAME=demo"},
			{"-e", "CLUSTER_ALLOW_GIDS=2000"},
			{"-e", "UPSTREAM_ADDR=upstream:7070"},
			{"--stop-signal", "SIGTERM"},
		} {
			require.True(t, hasArgs(args, pair[0], pair[1]), "%s lacks %s %s: %v", w, pair[0], pair[1], args)
		}
		require.Equal(t, "cluster-worker:demo", args[len(args)-1], "%s's image", w)
	}
	for _, w := range workers[:3] {
		require.True(t, hasArgs(runs[w], "-u", "1000:2000"), "%s's user: %v", w, runs[w])
	}
	other := runs[name("worker-other-uid", 1)]
	require.True(t, hasArgs(other, "-u", "1001:1001"), "worker-other-uid's user: %v", other)
	if !slices.Contains(other, "--group-add") {
		// podman-compose ignored group_add before 1.0.6 (containers/podman-compose#590):
		// with it, the replica of uid 1001 lacks group 2000 and is refused.
		require.Negative(t, slices.Compare(version[:], []int{1, 0, 6}), "podman-compose %v drops group_add: %v", version, other)
		t.Logf("podman-compose %d.%d.%d drops group_add (fixed in 1.0.6): worker-other-uid would run without group 2000 and be refused", version[0], version[1], version[2])
	} else {
		require.True(t, hasArgs(other, "--group-add", "2000"), "worker-other-uid's groups: %v", other)
	}
}

// podmanComposeVersion returns podman-compose's version.
func podmanComposeVersion(t *testing.T, p *podman) [3]int {
	t.Helper()
	cmd := exec.Command("podman-compose", "version")
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "podman-compose version: %s", out)
	m := regexp.MustCompile(`podman-composer? version\s+(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(string(out))
	require.NotNil(t, m, "podman-compose version: %s", out)
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v
}

// hasArgs reports whether seq occurs in args, in order and adjacent.
func hasArgs(args []string, seq ...string) bool {
	for i := 0; i+len(seq) <= len(args); i++ {
		if slices.Equal(args[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}
