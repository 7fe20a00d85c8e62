package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
)

func TestMain(m *testing.M) {
	os.Unsetenv(cluster.TransportEnv) // the tests expect the default transport, Unix
	goleak.VerifyTestMain(m)
}

// get GETs url and returns the response, which the caller closes.
func get(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, url)
	return resp
}

// scrape GETs /metrics as Prometheus would and parses the exposition.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp := get(t, base+"/metrics")
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// runs counts the runs of TestExampleServesMetricsAndVars in this process.
var runs atomic.Int32

// The example serves the documented metrics at /metrics and the Stats at /debug/vars.
func TestExampleServesMetricsAndVars(t *testing.T) {
	// expvar's names are the process's for good: each run (-count) publishes its own.
	varName := fmt.Sprint("cluster_", runs.Add(1))
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{name: "example-test", dir: dir, addr: "127.0.0.1:0", every: 10 * time.Millisecond, varName: varName},
			func(c *cluster.Client, a net.Addr) { addrs <- a })
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatal(err)
	}
	// A Follower of the example's Leader.
	f, err := cluster.Join(ctx, cluster.Config{Name: "example-test", Dir: dir, NewService: newClock, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, cluster.RoleFollower, f.Role().Role)

	value := func(mfs map[string]*dto.MetricFamily, name string, label ...string) (float64, bool) {
		for _, m := range mfs[name].GetMetric() {
			ok := true
			for _, lp := range m.GetLabel() {
				for i := 0; i+1 < len(label); i += 2 {
					if lp.GetName() == label[i] && lp.GetValue() != label[i+1] {
						ok = false
					}
				}
			}
			if ok {
				switch mfs[name].GetType() {
				case dto.MetricType_COUNTER:
					return m.GetCounter().GetValue(), true
				case dto.MetricType_GAUGE:
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	var mfs map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		mfs = scrape(t, base)
		calls, _ := value(mfs, "cluster_calls_total", "op", "invoke")
		followers, _ := value(mfs, "cluster_followers")
		return calls >= 2 && followers == 1
	}, 10*time.Second, 10*time.Millisecond, "the example invokes its Service and sees its Follower")

	for _, name := range []string{
		"cluster_info", "cluster_term", "cluster_leader", "cluster_followers",
		"cluster_subscriptions", "cluster_registrations",
		"cluster_calls_total", "cluster_call_errors_total", "cluster_call_timeouts_total",
		"cluster_call_duration_seconds",
		"cluster_leader_lost_total", "cluster_reconnects_total", "cluster_failovers_total",
		"cluster_last_failover_seconds", "cluster_dropped_messages_total", "cluster_panics_total",
		// cluster_refused_total appears with the first refusal
		"go_goroutines", "process_open_fds",
	} {
		require.Contains(t, mfs, name)
	}
	v, ok := value(mfs, "cluster_info", "name", "example-test", "role", "leader", "transport", "unix")
	require.True(t, ok)
	require.Equal(t, 1.0, v)
	v, _ = value(mfs, "cluster_leader")
	require.Equal(t, 1.0, v)
	v, _ = value(mfs, "cluster_call_errors_total", "op", "invoke")
	require.Equal(t, 0.0, v)
	var inHistogram uint64
	for _, m := range mfs["cluster_call_duration_seconds"].GetMetric() {
		inHistogram += m.GetHistogram().GetSampleCount()
	}
	require.GreaterOrEqual(t, inHistogram, uint64(2))

	resp := get(t, base+"/debug/vars")
	defer resp.Body.Close()
	require.Equal(t, "application/json; charset=utf-8", resp.Header.Get("Content-Type"))
	var vars map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&vars))
	var st cluster.Stats
	require.NoError(t, json.Unmarshal(vars[varName], &st))
	require.Equal(t, "example-test", st.Name)
	require.Equal(t, cluster.RoleLeader, st.Role)
	require.Equal(t, f.Role().Term, st.Term)
	require.Equal(t, 1, st.Followers)
	require.GreaterOrEqual(t, st.Ops["invoke"].Calls, uint64(2))
	require.NotEmpty(t, vars["memstats"], "expvar's own variables are served too")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}
