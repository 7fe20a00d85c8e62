// Package clusterexpvar publishes a cluster Client's Stats with the standard library's
// expvar, so that they show at /debug/vars beside the process's memstats and cmdline.
//
// It is a package of its own, not a method of Client, because importing expvar
// registers /debug/vars on http.DefaultServeMux and links net/http into the program:
// only the programs that ask for it pay for it.
//
//	if err := clusterexpvar.Publish("cluster", c); err != nil { ... }
//	// GET /debug/vars: {"cluster": {"Role": "leader", "Term": 3, "Ops": {...}, ...}, ...}
//
// The value is read at each request (Client.Stats), in the JSON form that
// Stats.MarshalJSON writes.
package clusterexpvar

import (
	"errors"
	"expvar"
	"fmt"
	"sync"

	"github.com/cluster-client-go/cluster"
)

// Func returns an expvar.Var whose value is c.Stats(), read each time it is shown.
// Publish it under a name of your choosing with expvar.Publish, or use Publish.
func Func(c *cluster.Client) expvar.Func {
	return func() any { return c.Stats() }
}

// mu serializes Publish, so that two calls with one name cannot both find it free.
var mu sync.Mutex

// Publish publishes c's Stats with expvar under name, to show at /debug/vars until the
// process exits (expvar cannot unpublish; the Stats of a closed Client show its role as
// "closed" and its last counts).
//
// Where expvar.Publish panics on a name already in use, Publish returns an error
// instead. It cannot stop expvar.Publish, called elsewhere with the same name at the
// same moment, from panicking. A nil Client or an empty name is an error matching
// cluster.ErrConfig.
func Publish(name string, c *cluster.Client) error {
	switch {
	case c == nil:
		return fmt.Errorf("clusterexpvar: %w: nil Client", cluster.ErrConfig)
	case name == "":
		return fmt.Errorf("clusterexpvar: %w: empty name", cluster.ErrConfig)
	}
	mu.Lock()
	defer mu.Unlock()
	if expvar.Get(name) != nil {
		return fmt.Errorf("clusterexpvar: %q: %w", name, ErrNameInUse)
	}
	expvar.Publish(name, Func(c))
	return nil
}

// ErrNameInUse is what Publish returns for a name expvar already has.
var ErrNameInUse = errors.New("expvar name already in use")
