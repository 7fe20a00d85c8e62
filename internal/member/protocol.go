package member

import (
	"encoding/json"
	"errors"

	"github.com/cluster-client-go/cluster"
)

// Command is one line a parent writes to a member's stdin. Which fields matter depends
// on Op; the member answers each Command with one "result" Event of the same ID.
//
// The built-in operations:
//
//	invoke       Client.Invoke(Name, Data); the result's Data is the answer
//	oneway       Client.InvokeOneway(Name, Data)
//	publish      Client.Publish(Name, Data)
//	subscribe    Client.Subscribe(Name), Shared: a shared subscription; every message
//	             is a "msg" Event whose Sub is this Command's ID
//	unsubscribe  closes the subscription of the subscribe Command Sub
//	register     Client.Register(Name, Data)
//	withdraw     withdraws the registration of the register Command Sub
//	stats        the result's Data is Client.Stats as JSON, Role, Term and LeaderPID
//	             are set from it
//	close        Client.Close, answered before the next Command is read
//
// A Program adds its own.
type Command struct {
	ID   int    `json:"id"`
	Op   string `json:"op"`
	Name string `json:"name,omitempty"`
	Data string `json:"data,omitempty"`
	// Timeout bounds the call (a time.ParseDuration string); none if empty.
	Timeout string `json:"timeout,omitempty"`
	// Sub is the ID of the subscribe or register Command that unsubscribe or withdraw
	// undoes.
	Sub    int  `json:"sub,omitempty"`
	Shared bool `json:"shared,omitempty"`
	// Args are the arguments of a Program's own operation.
	Args json.RawMessage `json:"args,omitempty"`
}

// Event kinds a member writes.
const (
	EvJoined    = "joined"     // Join returned: Role, Term, LeaderPID, PID, Host
	EvJoinError = "join-error" // Join (or the Program's Setup or Joined) failed: Err, Kind, PID; the member exits
	EvRole      = "role"       // a role change: Role, Term, LeaderPID, PID, Host; At is when the role began
	EvResult    = "result"     // the answer to Command ID: Err and Kind if it failed, Data or Body
	EvMsg       = "msg"        // a message to the subscription of Command Sub: Topic, Data
	// EvUnreadable is what Proc records for a line that is not JSON: Data holds it.
	EvUnreadable = "unreadable"
)

// Event is one line a member writes on stdout. At is a time in Unix nanoseconds: when
// the line was written, or for a role change when the role began.
type Event struct {
	Ev        string `json:"ev"`
	ID        int    `json:"id,omitempty"`
	Op        string `json:"op,omitempty"` // a result's Command
	Role      string `json:"role,omitempty"`
	Term      uint64 `json:"term,omitempty"`
	LeaderPID int    `json:"leader_pid,omitempty"`
	PID       int    `json:"pid,omitempty"`
	Host      string `json:"host,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Data      string `json:"data,omitempty"`
	Err       string `json:"err,omitempty"`
	// Kind is the class of Err: leader-lost, timeout, closed, no-leader,
	// unauthorized, unavailable, identity, panic, too-large, limit, config (the
	// library's sentinels), a Program's own (Program.ErrKind), remote, or other.
	Kind string `json:"kind,omitempty"`
	Sub  int    `json:"sub,omitempty"`
	At   int64  `json:"at,omitempty"`
	// Body is the value a Program's operation returned, as JSON.
	Body json.RawMessage `json:"body,omitempty"`

	// Line is the line as the member wrote it (set by Proc), for the fields of a
	// Program's own events.
	Line []byte `json:"-"`
}

// errKind names the class of a call's error, as Event.Kind reports it ("" for nil),
// asking more (if not nil) about an error that matches none of the library's
// sentinels before it is called remote or other.
func errKind(err error, more func(error) string) string {
	var re *cluster.RemoteError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, cluster.ErrLeaderLost):
		return "leader-lost"
	case errors.Is(err, cluster.ErrTimeout):
		return "timeout"
	case errors.Is(err, cluster.ErrClosed):
		return "closed"
	case errors.Is(err, cluster.ErrNoLeader):
		return "no-leader"
	case errors.Is(err, cluster.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, cluster.ErrServiceUnavailable):
		return "unavailable"
	case errors.Is(err, cluster.ErrIdentityMismatch):
		return "identity"
	case errors.Is(err, cluster.ErrServicePanic):
		return "panic"
	case errors.Is(err, cluster.ErrTooLarge):
		return "too-large"
	case errors.Is(err, cluster.ErrLimit):
		return "limit"
	case errors.Is(err, cluster.ErrConfig):
		return "config"
	}
	if more != nil {
		if k := more(err); k != "" {
			return k
		}
	}
	if errors.As(err, &re) {
		return "remote"
	}
	return "other"
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
