package clusterexpvar_test

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/clusterexpvar"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a trivial Service: Invoke answers with what it was sent.
type echo struct{}

func newEcho(context.Context) (cluster.Service, error) { return echo{}, nil }

func (echo) Invoke(_ context.Context, _ string, req cluster.Message) (cluster.Message, error) {
	return cluster.Message{Data: req.Data}, nil
}
func (echo) Subscribe(context.Context, string, func(cluster.Message)) (func(), error) {
	return func() {}, nil
}
func (echo) Publish(context.Context, string, cluster.Message) error { return nil }
func (echo) Close() error                                           { return nil }

// names counts the names unique has made.
var names atomic.Int32

// unique returns name with a suffix of its own: expvar's names are the process's for
// good, and a test may run more than once in it (-count).
func unique(name string) string { return fmt.Sprint(name, "_", names.Add(1)) }

// join starts a member of a cluster in dir.
func join(t testing.TB, dir string) *cluster.Client {
	c, err := cluster.Join(context.Background(), cluster.Config{
		Name: "expvar", Dir: dir, NewService: newEcho, Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// getVars fetches /debug/vars from expvar's handler over HTTP.
func getVars(t *testing.T) map[string]json.RawMessage {
	srv := httptest.NewServer(expvar.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/vars")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var vars map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&vars))
	return vars
}

func TestPublishShowsStatsAtDebugVars(t *testing.T) {
	dir := t.TempDir()
	l := join(t, dir)
	f := join(t, dir)
	ctx := context.Background()
	for range 3 {
		_, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("x")})
		require.NoError(t, err)
	}
	lname, fname := unique("test_leader"), unique("test_follower")
	require.NoError(t, clusterexpvar.Publish(lname, l))
	require.NoError(t, clusterexpvar.Publish(fname, f))

	vars := getVars(t)
	require.Contains(t, vars, "memstats", "expvar's own variables are still there")
	var ls, fs cluster.Stats
	require.NoError(t, json.Unmarshal(vars[lname], &ls))
	require.NoError(t, json.Unmarshal(vars[fname], &fs))
	require.Equal(t, cluster.RoleLeader, ls.Role)
	require.Equal(t, cluster.RoleFollower, fs.Role)
	require.NotZero(t, ls.Term)
	require.Equal(t, ls.Term, fs.Term)
	require.Equal(t, 1, ls.Followers)
	require.EqualValues(t, 3, fs.Ops["invoke"].Calls)
	require.Positive(t, fs.Ops["invoke"].LatencySum)

	// The value is read at each request, not when it was published.
	_, err := f.Invoke(ctx, "echo", cluster.Message{})
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(getVars(t)[fname], &fs))
	require.EqualValues(t, 4, fs.Ops["invoke"].Calls)

	// The names are readable without a decoder of Stats, too.
	var raw map[string]any
	require.NoError(t, json.Unmarshal(vars[lname], &raw))
	require.Equal(t, "leader", raw["Role"])
	require.Contains(t, raw, "Ops")

	// A closed Client shows as closed.
	require.NoError(t, f.Close())
	require.NoError(t, json.Unmarshal(getVars(t)[fname], &fs))
	require.Equal(t, cluster.RoleClosed, fs.Role)
}

func TestPublishRefusesWhatExpvarWouldPanicOn(t *testing.T) {
	c := join(t, t.TempDir())
	twice := unique("test_twice")
	require.NoError(t, clusterexpvar.Publish(twice, c))
	require.ErrorIs(t, clusterexpvar.Publish(twice, c), clusterexpvar.ErrNameInUse)
	require.ErrorIs(t, clusterexpvar.Publish("memstats", c), clusterexpvar.ErrNameInUse, "expvar's own name")
	require.ErrorIs(t, clusterexpvar.Publish("test_nil", nil), cluster.ErrConfig)
	require.ErrorIs(t, clusterexpvar.Publish("", c), cluster.ErrConfig)
	require.Nil(t, expvar.Get("test_nil"), "nothing published on an error")
}

func TestFuncReadsStatsEachTime(t *testing.T) {
	c := join(t, t.TempDir())
	v := clusterexpvar.Func(c)
	var st cluster.Stats
	require.NoError(t, json.Unmarshal([]byte(v.String()), &st))
	require.Zero(t, st.Ops["invoke"].Calls)
	_, err := c.Invoke(context.Background(), "echo", cluster.Message{})
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(v.String()), &st))
	require.EqualValues(t, 1, st.Ops["invoke"].Calls)
}

func ExamplePublish() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	c, err := cluster.Join(context.Background(), cluster.Config{
		Name: "example", Dir: dir, NewService: newEcho, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	if err := clusterexpvar.Publish("cluster", c); err != nil {
		fmt.Println(err)
		return
	}
	// A program serving http.DefaultServeMux shows it at /debug/vars; here, expvar's
	// handler on a test server.
	srv := httptest.NewServer(expvar.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/vars")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var vars struct{ Cluster cluster.Stats }
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(vars.Cluster.Name, vars.Cluster.Role, vars.Cluster.Term)
	fmt.Println(clusterexpvar.Publish("cluster", c))
	// Output:
	// example leader 1
	// clusterexpvar: "cluster": expvar name already in use
}
