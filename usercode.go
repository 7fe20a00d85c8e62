package cluster

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
)

// Every call into code the application wrote goes through this file: the Service's
// methods, NewService, a Withdrawer, the cancel function Service.Subscribe returned,
// subscription callbacks and OnRoleChange. Two reasons:
//
//   - A panic there is recovered, logged once at ERROR with its stack and counted in
//     Stats.Panics. Left alone it would kill the process, and a Leader that dies on a
//     request hands the same request, retried by its caller, to the next Leader: one
//     poisoned call would take the pool down one Leader at a time.
//   - Client.Close must know when it is called from inside such code, because it waits
//     for that code to return (see calledFromUserCode).

// panicError is what a recovered panic in user code becomes.
type panicError struct {
	in    string // "Service.Invoke", "NewService", "subscription callback", ...
	name  string // the method or topic, if any
	value any
}

func (e *panicError) Error() string {
	if e.name == "" {
		return fmt.Sprintf("%s panicked: %v", e.in, e.value)
	}
	return fmt.Sprintf("%s %q panicked: %v", e.in, e.name, e.value)
}

// Is makes a panic in the Service match ErrServicePanic.
func (e *panicError) Is(target error) bool { return target == ErrServicePanic }

// enter marks that a goroutine of this Client runs user code of kind k; the deferred
// recovered unmarks it (see Client.Close).
func (c *Client) enter(k userCode) { c.inUserCode[k.index()].Add(1) }

// running returns the kinds of user code some goroutine of this Client runs now.
func (c *Client) running() userCode {
	var in userCode
	for k := inService; k <= inRoleChange; k <<= 1 {
		if c.inUserCode[k.index()].Load() > 0 {
			in |= k
		}
	}
	return in
}

// recovered is deferred around a call into user code of kind k, entered with enter: it
// unmarks it, recovers a panic, logs and counts it and, when err is not nil, makes it the
// call's error. It must be the deferred function itself (recover works only there).
func (c *Client) recovered(k userCode, in, name string, err *error) {
	c.inUserCode[k.index()].Add(-1)
	v := recover()
	if v == nil {
		return
	}
	pe := c.notePanic(in, name, v)
	if err != nil {
		*err = pe
	}
}

// notePanic logs, with its stack, and counts a panic recovered from user code (in, and
// name, say where), and returns it as an error. Call it from the deferred function that
// recovered it, so that the stack is the panic's.
func (c *Client) notePanic(in, name string, v any) *panicError {
	c.stats.panics.Add(1)
	c.cfg.Logger.Error("cluster: recovered a panic in application code; the member goes on",
		"name", c.cfg.Name, "in", in, "what", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	return &panicError{in: in, name: name, value: v}
}

// errText is an error of the application's as text, for a log line: fmt recovers a
// panic in its Error method (a typed nil, say) and says so in the text.
func errText(err error) string { return fmt.Sprint(err) }

// service is the Leader's Service seen through the guards.
type service struct {
	c   *Client
	svc Service
}

// newService calls Config.NewService. A nil Service is an error.
func (c *Client) newService(ctx context.Context) (s service, err error) {
	c.enter(inService)
	defer c.recovered(inService, "NewService", "", &err)
	svc, err := c.cfg.NewService(ctx)
	if err == nil && svc == nil {
		err = fmt.Errorf("NewService returned a nil Service and no error")
	}
	return service{c: c, svc: svc}, err
}

func (s service) invoke(ctx context.Context, method string, req Message) (out Message, err error) {
	s.c.enter(inService)
	defer s.c.recovered(inService, "Service.Invoke", method, &err)
	return s.svc.Invoke(ctx, method, req)
}

// invokeBatch calls bi.InvokeBatch; a panic is its error, for every call of the batch.
func (s service) invokeBatch(ctx context.Context, bi BatchInvoker, calls []*Call) (err error) {
	s.c.enter(inService)
	defer s.c.recovered(inService, "BatchInvoker.InvokeBatch", "", &err)
	bi.InvokeBatch(ctx, calls)
	return nil
}

func (s service) publish(ctx context.Context, topic string, msg Message) (err error) {
	s.c.enter(inService)
	defer s.c.recovered(inService, "Service.Publish", topic, &err)
	return s.svc.Publish(ctx, topic, msg)
}

// subscribe calls Service.Subscribe; the cancel function it returns is guarded too (nil
// when the Service returned none).
func (s service) subscribe(ctx context.Context, topic string, emit func(Message)) (cancel func(), err error) {
	s.c.enter(inService)
	defer s.c.recovered(inService, "Service.Subscribe", topic, &err)
	stop, err := s.svc.Subscribe(ctx, topic, emit)
	if err != nil || stop == nil {
		return nil, err
	}
	return func() {
		s.c.enter(inService)
		defer s.c.recovered(inService, "the cancel function of Service.Subscribe", topic, nil)
		stop()
	}, nil
}

// withdrawer reports whether the Service implements Withdrawer.
func (s service) withdrawer() bool {
	_, ok := s.svc.(Withdrawer)
	return ok
}

// withdraw calls Withdrawer.Withdraw; a Service that is not a Withdrawer is never told.
func (s service) withdraw(ctx context.Context, topic string, msg Message) (err error) {
	w, ok := s.svc.(Withdrawer)
	if !ok {
		return nil
	}
	s.c.enter(inService)
	defer s.c.recovered(inService, "Withdrawer.Withdraw", topic, &err)
	return w.Withdraw(ctx, topic, msg)
}

func (s service) close() (err error) {
	s.c.enter(inService)
	defer s.c.recovered(inService, "Service.Close", "", &err)
	return s.svc.Close()
}

// callback runs a subscription's callback with m.
func (c *Client) callback(topic string, fn func(Message), m Message) {
	c.enter(inCallback)
	defer c.recovered(inCallback, "subscription callback", topic, nil)
	fn(m)
}

// roleChanged runs OnRoleChange with r.
func (c *Client) roleChanged(r RoleInfo) {
	c.enter(inRoleChange)
	defer c.recovered(inRoleChange, "OnRoleChange", "", nil)
	c.cfg.OnRoleChange(r)
}

// userCodeFuncs are the functions above that call into user code, by the names the
// runtime gives their frames; taken from the functions themselves, so that a rename
// cannot silently break calledFromUserCode.
var userCodeFuncs = func() map[string]userCode {
	name := func(f any) string { return runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name() }
	return map[string]userCode{
		name((*Client).newService):  inService,
		name(service.invoke):        inService,
		name(service.invokeBatch):   inService,
		name(service.publish):       inService,
		name(service.subscribe):     inService,
		name(service.withdraw):      inService,
		name(service.close):         inService,
		name((*Client).callback):    inCallback,
		name((*Client).roleChanged): inRoleChange,
	}
}()

// userCode says which kinds of user code a goroutine is running (a set).
type userCode uint8

const (
	inService    userCode = 1 << iota // the Service (or NewService, or a Withdrawer) on the Leader
	inCallback                        // a subscription callback
	inRoleChange                      // OnRoleChange
)

// index is k's place in Client.inUserCode.
func (k userCode) index() int {
	switch k {
	case inService:
		return 0
	case inCallback:
		return 1
	}
	return 2
}

// calledFromUserCode reports whether the calling goroutine is inside user code that
// this package called, and which. It walks the goroutine's stack, so it is for rare
// calls only (Close). The frames it looks for are every Client's: the caller keeps only
// the kinds its own Client runs (Client.running), so that a Client closed from another
// Client's callback is not mistaken for its own.
func calledFromUserCode() userCode {
	pcs := make([]uintptr, 256)
	n := runtime.Callers(2, pcs)
	for n == len(pcs) { // the guard is near the goroutine's first frame: see them all
		pcs = make([]uintptr, 2*len(pcs))
		n = runtime.Callers(2, pcs)
	}
	frames := runtime.CallersFrames(pcs[:n])
	var in userCode
	for {
		f, more := frames.Next()
		if k, ok := userCodeFuncs[f.Function]; ok {
			in |= k
		} else if strings.HasPrefix(f.Function, subscribeGuardPrefix) {
			in |= inService // the guarded cancel function of Service.Subscribe
		}
		if !more {
			return in
		}
	}
}

// subscribeGuardPrefix names the closures service.subscribe returns.
var subscribeGuardPrefix = runtime.FuncForPC(reflect.ValueOf(service.subscribe).Pointer()).Name() + ".func"
