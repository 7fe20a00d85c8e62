package prometheus_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
	clusterprom "github.com/cluster-client-go/cluster/prometheus"
)

func TestMain(m *testing.M) {
	os.Unsetenv(cluster.TransportEnv) // the tests expect the default transport, Unix
	goleak.VerifyTestMain(m)
}

// echo is a trivial Service: Invoke answers "fail" with an error and anything else with
// what it was sent.
type echo struct{}

func newEcho(context.Context) (cluster.Service, error) { return echo{}, nil }

func (echo) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method == "fail" {
		return cluster.Message{}, errors.New("failed as asked")
	}
	return cluster.Message{Data: req.Data}, nil
}
func (echo) Subscribe(context.Context, string, func(cluster.Message)) (func(), error) {
	return func() {}, nil
}
func (echo) Publish(context.Context, string, cluster.Message) error { return nil }
func (echo) Close() error                                           { return nil }

// join starts a member of cluster name in dir; a Leader it starts allows each Follower
// one subscription.
func join(t testing.TB, dir, name string) *cluster.Client {
	c, err := cluster.Join(context.Background(), cluster.Config{
		Name: name, Dir: dir, NewService: newEcho, Logger: slog.New(slog.DiscardHandler),
		Limits: cluster.Limits{MaxSubscriptions: 1},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pair starts a Leader and a Follower of cluster "metrics" in a fresh directory, and
// has the Follower make calls: 3 invokes that succeed and 1 that fails, a subscription,
// and a second subscription that the Leader refuses (MaxSubscriptions).
func pair(t *testing.T) (l, f *cluster.Client) {
	dir := t.TempDir()
	l = join(t, dir, "metrics")
	f = join(t, dir, "metrics")
	require.Equal(t, cluster.RoleLeader, l.Role().Role)
	require.Equal(t, cluster.RoleFollower, f.Role().Role)
	ctx := context.Background()
	for range 3 {
		_, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("x")})
		require.NoError(t, err)
	}
	_, err := f.Invoke(ctx, "fail", cluster.Message{})
	require.Error(t, err)
	sub, err := f.Subscribe(ctx, "a", func(cluster.Message) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	_, err = f.Subscribe(ctx, "b", func(cluster.Message) {})
	require.ErrorIs(t, err, cluster.ErrLimit)
	return l, f
}

// documented are the metric families docs/metrics.md lists (TestDocsListTheMetrics).
var documented = []string{
	"cluster_info", "cluster_term", "cluster_leader", "cluster_followers",
	"cluster_subscriptions", "cluster_registrations",
	"cluster_calls_total", "cluster_call_errors_total", "cluster_call_timeouts_total",
	"cluster_call_duration_seconds",
	"cluster_leader_lost_total", "cluster_reconnects_total", "cluster_failovers_total",
	"cluster_last_failover_seconds", "cluster_dropped_messages_total", "cluster_panics_total",
	"cluster_refused_total", "cluster_read_bytes_total", "cluster_written_bytes_total",
}

// The metrics pass client_golang's own linter, every documented one of them (the
// Leader's refusal makes cluster_refused_total appear), and no others are sent.
func TestCollectorLints(t *testing.T) {
	l, f := pair(t)
	for _, c := range []*cluster.Client{l, f} {
		problems, err := testutil.CollectAndLint(clusterprom.NewCollector(c))
		require.NoError(t, err)
		require.Empty(t, problems)
	}
	// The linter looks only at what was collected: check that it saw every family.
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(clusterprom.NewCollector(l)))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	require.ElementsMatch(t, documented, names)
}

// scrape registers a Collector of c in a fresh registry, serves it with promhttp on a
// test server and GETs it, as Prometheus would, returning the parsed exposition.
func scrape(t *testing.T, c *cluster.Client) map[string]*dto.MetricFamily {
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(clusterprom.NewCollector(c)))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), resp.Header.Get("Content-Type"))
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// metric returns the one series of family name in mfs whose labels include want.
func metric(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want ...string) *dto.Metric {
	t.Helper()
	mf := mfs[name]
	require.NotNil(t, mf, "no family %s", name)
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		ok := labels["name"] == "metrics" // every series carries the cluster's name
		for i := 0; i+1 < len(want); i += 2 {
			ok = ok && labels[want[i]] == want[i+1]
		}
		if ok {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "series of %s with %v", name, want)
	return found[0]
}

// value returns the value of a gauge or counter series.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	m := metric(t, mfs, name, want...)
	switch mfs[name].GetType() {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	}
	t.Fatalf("%s is a %v", name, mfs[name].GetType())
	return 0
}

// A real scrape of the HTTP handler shows every documented metric, with the values the
// calls made.
func TestScrapeShowsDocumentedMetrics(t *testing.T) {
	began := time.Now()
	l, f := pair(t)
	fm := scrape(t, f)
	lm := scrape(t, l)
	for _, name := range documented {
		require.Contains(t, lm, name, "on the Leader")
		if name != "cluster_refused_total" { // a Follower has refused nobody
			require.Contains(t, fm, name, "on the Follower")
		}
	}
	types := map[string]dto.MetricType{
		"cluster_info": dto.MetricType_GAUGE, "cluster_term": dto.MetricType_GAUGE,
		"cluster_calls_total": dto.MetricType_COUNTER, "cluster_refused_total": dto.MetricType_COUNTER,
		"cluster_call_duration_seconds": dto.MetricType_HISTOGRAM, "cluster_last_failover_seconds": dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		require.Equal(t, typ, lm[name].GetType(), name)
		require.NotEmpty(t, lm[name].GetHelp(), name)
	}

	// Roles and terms.
	require.Equal(t, 1.0, value(t, fm, "cluster_info", "role", "follower", "transport", "unix"))
	require.Equal(t, 1.0, value(t, lm, "cluster_info", "role", "leader", "transport", "unix"))
	require.Equal(t, 0.0, value(t, fm, "cluster_leader"))
	require.Equal(t, 1.0, value(t, lm, "cluster_leader"))
	term := value(t, lm, "cluster_term")
	require.Equal(t, float64(l.Stats().Term), term)
	require.Positive(t, term)
	require.Equal(t, term, value(t, fm, "cluster_term"))
	require.Equal(t, 1.0, value(t, lm, "cluster_followers"))
	require.Equal(t, 0.0, value(t, fm, "cluster_followers"))
	require.Equal(t, 1.0, value(t, fm, "cluster_subscriptions"))
	require.Equal(t, 0.0, value(t, fm, "cluster_registrations"))

	// Calls, by kind.
	require.Equal(t, 4.0, value(t, fm, "cluster_calls_total", "op", "invoke"))
	require.Equal(t, 1.0, value(t, fm, "cluster_call_errors_total", "op", "invoke"))
	require.Equal(t, 0.0, value(t, fm, "cluster_call_timeouts_total", "op", "invoke"))
	require.Equal(t, 2.0, value(t, fm, "cluster_calls_total", "op", "subscribe"))
	require.Equal(t, 1.0, value(t, fm, "cluster_call_errors_total", "op", "subscribe"))
	require.Equal(t, 0.0, value(t, fm, "cluster_calls_total", "op", "publish"))
	require.Equal(t, 0.0, value(t, lm, "cluster_calls_total", "op", "invoke"), "the Follower's calls are its own")
	require.Len(t, fm["cluster_calls_total"].GetMetric(), 5, "one series per kind of call")

	// The histogram: cumulative buckets at LatencyBuckets in seconds, every call counted,
	// the sum the calls' latencies.
	h := metric(t, fm, "cluster_call_duration_seconds", "op", "invoke").GetHistogram()
	require.EqualValues(t, 4, h.GetSampleCount())
	require.Positive(t, h.GetSampleSum())
	require.LessOrEqual(t, h.GetSampleSum(), time.Since(began).Seconds(), "seconds, of calls made one after another")
	require.InDelta(t, f.Stats().Ops["invoke"].LatencySum.Seconds(), h.GetSampleSum(), 1e-9)
	bounds := cluster.LatencyBuckets()
	bs := h.GetBucket()
	if len(bs) > 0 && bs[len(bs)-1].GetUpperBound() > bounds[len(bounds)-1].Seconds() {
		bs = bs[:len(bs)-1] // the parser's +Inf bucket
	}
	require.Len(t, bs, len(bounds))
	var last uint64
	for i, b := range bs {
		require.Equal(t, bounds[i].Seconds(), b.GetUpperBound())
		require.GreaterOrEqual(t, b.GetCumulativeCount(), last, "cumulative")
		last = b.GetCumulativeCount()
	}
	require.LessOrEqual(t, last, h.GetSampleCount())
	require.Zero(t, metric(t, fm, "cluster_call_duration_seconds", "op", "register").GetHistogram().GetSampleCount())

	// What the connections carried: the Follower wrote what the Leader read.
	require.Positive(t, value(t, fm, "cluster_written_bytes_total"))
	require.Positive(t, value(t, lm, "cluster_read_bytes_total"))

	// What the Leader refused, by kind.
	require.Equal(t, 1.0, value(t, lm, "cluster_refused_total", "kind", "MaxSubscriptions"))
	require.Len(t, lm["cluster_refused_total"].GetMetric(), 1)

	for _, name := range []string{"cluster_leader_lost_total", "cluster_reconnects_total", "cluster_failovers_total",
		"cluster_last_failover_seconds", "cluster_dropped_messages_total", "cluster_panics_total"} {
		require.Equal(t, 0.0, value(t, fm, name), name)
	}
}

// After a failover the Follower that took over shows as Leader of a later term, and
// counts the failover.
func TestScrapeAfterFailover(t *testing.T) {
	l, f := pair(t)
	term := l.Stats().Term
	require.NoError(t, l.Close())
	// Role turns to Leader before the member has resubscribed and replayed; the
	// failover's time is recorded once it has.
	require.Eventually(t, func() bool {
		return f.Role().Role == cluster.RoleLeader && f.Stats().LastFailover > 0
	}, 10*time.Second, time.Millisecond)
	fm := scrape(t, f)
	require.Equal(t, 1.0, value(t, fm, "cluster_leader"))
	require.Equal(t, 1.0, value(t, fm, "cluster_info", "role", "leader", "transport", "unix"))
	require.Greater(t, value(t, fm, "cluster_term"), float64(term))
	require.Equal(t, 1.0, value(t, fm, "cluster_failovers_total"))
	require.Positive(t, value(t, fm, "cluster_last_failover_seconds"))
	lm := scrape(t, l)
	require.Equal(t, 1.0, value(t, lm, "cluster_info", "role", "closed", "transport", "unix"))
	require.Equal(t, 0.0, value(t, lm, "cluster_leader"))
}

// Collectors of two clusters share a registry: the name label tells them apart. Two of
// one cluster in one registry are refused, as any duplicate is.
func TestCollectorsShareARegistry(t *testing.T) {
	dir := t.TempDir()
	a, b := join(t, dir, "a"), join(t, dir, "b")
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(clusterprom.NewCollector(a)))
	require.NoError(t, reg.Register(clusterprom.NewCollector(b)))
	err := reg.Register(clusterprom.NewCollector(a))
	var are prometheus.AlreadyRegisteredError
	require.ErrorAs(t, err, &are)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	i := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "cluster_leader" })
	require.GreaterOrEqual(t, i, 0)
	require.Len(t, mfs[i].GetMetric(), 2)
}

// docs/metrics.md's table lists the metrics the Collector sends, no more, no fewer.
func TestDocsListTheMetrics(t *testing.T) {
	b, err := os.ReadFile("../docs/metrics.md")
	require.NoError(t, err)
	var inDocs []string
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "| `cluster_"); ok {
			inDocs = append(inDocs, "cluster_"+rest[:strings.IndexByte(rest, '`')])
		}
	}
	require.ElementsMatch(t, documented, inDocs)
}

func TestNewCollectorOfNilPanics(t *testing.T) {
	require.PanicsWithValue(t, "cluster/prometheus: NewCollector of a nil Client", func() { clusterprom.NewCollector(nil) })
}
