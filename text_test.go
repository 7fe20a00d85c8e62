package cluster_test

import (
	"context"
	"encoding"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
)

// The enums an operator sees in logs, JSON and configuration files read as words and
// come back from them.
func TestEnumsMarshalAsText(t *testing.T) {
	type enum interface {
		encoding.TextMarshaler
		String() string
	}
	check := func(t *testing.T, v enum, want string, back encoding.TextUnmarshaler) {
		t.Helper()
		b, err := v.MarshalText()
		require.NoError(t, err)
		require.Equal(t, want, string(b))
		require.NoError(t, back.UnmarshalText(b))
	}
	for _, r := range []cluster.Role{cluster.RoleElecting, cluster.RoleLeader, cluster.RoleFollower, cluster.RoleClosed} {
		var back cluster.Role
		check(t, r, r.String(), &back)
		require.Equal(t, r, back)
	}
	for _, p := range []cluster.LeadPolicy{cluster.LeadAuto, cluster.LeadNever, cluster.LeadAlways} {
		var back cluster.LeadPolicy
		check(t, p, p.String(), &back)
		require.Equal(t, p, back)
	}
	for _, tr := range []cluster.Transport{cluster.TransportAuto, cluster.TransportUnix, cluster.TransportTCP} {
		var back cluster.Transport
		check(t, tr, tr.String(), &back)
		require.Equal(t, tr, back)
	}

	// Unknown values are errors, not numbers in disguise.
	_, err := cluster.Role(9).MarshalText()
	require.Error(t, err)
	var p cluster.LeadPolicy
	err = p.UnmarshalText([]byte("sometimes"))
	require.ErrorIs(t, err, cluster.ErrConfig)
	require.ErrorContains(t, err, `"sometimes" is not a LeadPolicy (want one of auto, never, always)`)

	b, err := json.Marshal(map[string]any{"role": cluster.RoleLeader, "lead": cluster.LeadNever, "transport": cluster.TransportTCP})
	require.NoError(t, err)
	require.JSONEq(t, `{"role":"leader","lead":"never","transport":"tcp"}`, string(b))
}

func TestStatsMarshalToReadableJSON(t *testing.T) {
	tc := newTestCluster(t)
	c := tc.join(nil)
	st := c.Stats()
	st.LastFailover = 4430 * time.Microsecond
	b, err := json.Marshal(st)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, "leader", got["Role"])
	require.Equal(t, "4.43ms", got["LastFailover"])
	require.Equal(t, tc.name, got["Name"])
	require.EqualValues(t, st.Term, got["Term"])
	at, err := time.Parse(time.RFC3339Nano, got["At"].(string))
	require.NoError(t, err)
	require.True(t, at.Equal(st.At))

	var back cluster.Stats
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, st.LastFailover, back.LastFailover)
	require.Equal(t, st.Role, back.Role)
	require.Equal(t, st.Name, back.Name)
	require.True(t, st.At.Equal(back.At))
}

// Validate looks at the Config only: no file is made, no environment read; Join does
// both.
func TestValidateIsPure(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	missing := filepath.Join(dir, "not", "yet")
	cfg := cluster.Config{Name: "x", Dir: missing, NewService: func(context.Context) (cluster.Service, error) { return nil, nil }}
	t.Setenv(cluster.TransportEnv, "carrier-pigeon")
	require.NoError(t, cfg.Validate())
	require.NoDirExists(t, missing)
	_, err = cluster.Join(context.Background(), cfg)
	require.ErrorIs(t, err, cluster.ErrConfig)
	require.ErrorContains(t, err, cluster.TransportEnv)

	bad := cfg
	bad.Name = "a/b"
	require.ErrorIs(t, bad.Validate(), cluster.ErrConfig)
	bad = cfg
	bad.Limits.MaxNameLen = 1 << 20
	require.ErrorContains(t, bad.Validate(), "Limits")
}
