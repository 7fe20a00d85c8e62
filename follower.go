package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// errHungUp marks a handshake the other side ended without a word: a Leader dying at
// that moment, or, when it keeps happening, a program that is not ours.
var errHungUp = errors.New("the other side hung up during the handshake")

// follower is the backend of a member whose Leader is another process.
type follower struct {
	c           *Client
	conn        *ipc.Conn
	welcome     frame.Welcome
	at          time.Time
	goodbye     chan struct{} // closed when the Leader announces its handover
	goodbyeOnce sync.Once
	accounted   bool // its bytes are in the Client's counters; guarded by counters.bytesMu
}

// follow dials the Leader's socket and handshakes.
func (c *Client) follow(ctx context.Context) (*follower, error) {
	nc, token, err := c.tr.dial(ctx)
	if err != nil {
		return nil, err
	}
	hello := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: uint32(pid()), MaxBody: uint32(c.cfg.MaxBody), Name: c.cfg.Name, Token: token, Identity: c.cfg.Identity}
	w, err := handshake(ctx, nc, hello, c.tr)
	if err != nil {
		return nil, err
	}
	if w.Name != c.cfg.Name {
		_ = nc.Close()
		return nil, fmt.Errorf("%w: %s serves cluster %q, not %q", ErrProtocol, c.tr.where(), w.Name, c.cfg.Name)
	}
	if w.Identity != c.cfg.Identity {
		_ = nc.Close()
		return nil, fmt.Errorf("%w: cluster %q: the leader (pid %d, term %d) serves Config.Identity %q; this member's is %q",
			ErrIdentityMismatch, c.cfg.Name, w.PID, w.Term, w.Identity, c.cfg.Identity)
	}
	f := &follower{c: c, welcome: w, at: time.Now(), goodbye: make(chan struct{})}
	opts := c.cfg.connOptions()
	opts.FileHandler = f.handle
	opts.CallerReads = true
	f.conn = ipc.NewConn(nc, ipc.PeerCred{}, opts)
	f.conn.Start()
	return f, nil
}

// handshake sends hello on nc, dialled to tr's Leader, and returns the welcome, within
// ctx and handshakeTimeout. It closes nc on error, which says what the Leader answered:
// ErrUnauthorized, ErrLimit (full for now: try again), ErrIdentityMismatch, ErrProtocol,
// ipc.ErrNoListener (handing over, or not ready yet: try again), or errHungUp.
func handshake(ctx context.Context, nc net.Conn, hello frame.Hello, tr transport) (frame.Welcome, error) {
	deadline := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	w, err := ipc.ClientHandshake(nc, hello, deadline)
	if err == nil {
		return w, nil
	}
	_ = nc.Close()
	var fe *ipc.FrameError
	switch {
	case errors.As(err, &fe) && fe.Code == frame.CodeUnauthorized:
		return w, fmt.Errorf("%w: %s", ErrUnauthorized, fe.Message)
	case errors.As(err, &fe) && fe.Code == frame.CodeLimit:
		// Full for now (connections, descriptors): try again, as for a Leader that is
		// not listening yet; Join's error names the limit if it lasts.
		return w, &detailError{msg: fmt.Sprintf("cluster: the leader at %s refused this connection: %s", tr.where(), fe.Message), is: ErrLimit}
	case errors.As(err, &fe) && fe.Code == frame.CodeIdentity:
		return w, fmt.Errorf("%w: cluster %q: %s", ErrIdentityMismatch, hello.Name, fe.Message)
	case errors.As(err, &fe) && fe.Code == frame.CodeClosed:
		// The Leader is handing over, or not ready for us yet: try again.
		return w, fmt.Errorf("%w: %s", ipc.ErrNoListener, fe.Message)
	case errors.As(err, &fe):
		return w, fmt.Errorf("%w: leader refused the handshake: %w", ErrProtocol, fe)
	case errors.Is(err, ipc.ErrNotOurProtocol):
		return w, fmt.Errorf("%w: %s: %w", ErrProtocol, tr.where(), err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		err = fmt.Errorf("%w: %w", errHungUp, err)
	}
	return w, fmt.Errorf("handshake with the leader at %s: %w", tr.where(), err)
}

// handle runs on whichever goroutine holds the connection's reading role (its reader
// goroutine, or a caller reading its own response): it must not block. It owns files.
func (f *follower) handle(conn *ipc.Conn, fr frame.Frame, files []*os.File) {
	switch fr.Kind {
	case frame.KindMessage:
		if f.saidGoodbye() {
			// The Leader is handing over and this member has moved on: a message it
			// still fans out would arrive after the next Leader's, out of order.
			closeFiles(files)
			return
		}
		topic := string(fr.Meta)
		m, err := decodeMessage(fr, files, f.c.cfg.MaxBlob)
		if err != nil {
			if errors.Is(err, frame.ErrProtocol) {
				conn.Fail(frame.CodeProtocol, err)
				return
			}
			f.c.cfg.Logger.Warn("cluster: message not delivered", "topic", topic, "err", err)
			f.c.subs.dropped.Add(1)
			return
		}
		m, _ = own(m) // a fresh Message: own cannot fail
		f.c.subs.deliver(topic, m, fr.Flags&frame.FlagShared != 0)
		release(m)
		return
	}
	closeFiles(files)
	switch fr.Kind {
	case frame.KindGoodbye:
		// The Leader is handing over. Acknowledge with our own goodbye as the last frame
		// we send: from here on a request on this connection fails before it is sent
		// and waits for the next Leader, so none can be lost in the handover.
		f.goodbyeOnce.Do(func() {
			_ = conn.CloseSend(frame.Header{Kind: frame.KindGoodbye})
			close(f.goodbye)
		})
	default:
		conn.Fail(frame.CodeProtocol, fmt.Errorf("%w: unexpected %s frame from the leader", frame.ErrProtocol, fr.Kind))
	}
}

// saidGoodbye reports whether the Leader announced its handover on this connection.
func (f *follower) saidGoodbye() bool {
	select {
	case <-f.goodbye:
		return true
	default:
		return false
	}
}

func (f *follower) info() RoleInfo {
	return RoleInfo{Role: RoleFollower, Term: f.welcome.Term, LeaderPID: int(f.welcome.PID), At: f.at}
}

func (f *follower) context() context.Context { return f.conn.Context() }

// bytes are the connection's, until the run loop accounted them as ended (under
// counters.bytesMu, as this is called).
func (f *follower) bytes() (in, out uint64) {
	if f.accounted {
		return 0, 0
	}
	return f.conn.Bytes()
}

func (f *follower) status(ctx context.Context) (*Status, error) {
	fr, err := callNoFiles(ctx, f.conn, frame.KindStatus, timeoutMillis(ctx), nil, nil)
	if err != nil {
		return nil, f.mapErr(ctx, "status", f.c.cfg.Name, err)
	}
	return decodeStatus(fr.Body)
}

// callNoFiles makes a request whose answer passes no files: an answer that does is
// refused, its files closed.
func callNoFiles(ctx context.Context, conn *ipc.Conn, kind frame.Kind, timeout uint32, meta, body []byte) (frame.Frame, error) {
	fr, files, err := conn.Call(ctx, ipc.Request{Header: frame.Header{Kind: kind, Timeout: timeout}, Meta: meta, Body: body})
	if len(files) > 0 {
		closeFiles(files)
		return frame.Frame{}, fmt.Errorf("%w: the leader's answer to a %s request passes %d file descriptors", ErrProtocol, kind, len(files))
	}
	return fr, err
}

func (f *follower) cause() error { return f.conn.Err() }

// timeoutMillis is the time left before ctx's deadline, for the Leader's Service call.
func timeoutMillis(ctx context.Context) uint32 {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	ms := time.Until(d).Milliseconds()
	switch {
	case ms < 1:
		return 1
	case ms > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(ms)
}

func (f *follower) invoke(ctx context.Context, method string, req Message, oneway bool) (Message, error) {
	w, err := encodeMessage(f.conn, req, int(f.welcome.MaxBody), "invoke", method, "the request")
	if err != nil {
		return Message{}, err
	}
	h := frame.Header{Kind: frame.KindInvoke, Flags: w.flags, Timeout: timeoutMillis(ctx)}
	if oneway {
		h.Kind = frame.KindOneway
		if err := f.conn.SendParts(h, []byte(method), w.body, w.tail, w.files); err != nil {
			return Message{}, fmt.Errorf("%w: %w", errNotSent, err)
		}
		return Message{}, nil
	}
	wctx, deadline := deadlineOf(ctx)
	fr, files, err := f.conn.Call(wctx, ipc.Request{Header: h, Meta: []byte(method), Body: w.body, Tail: w.tail, Files: w.files, Deadline: deadline})
	if err != nil {
		closeFiles(files)
		return Message{}, f.mapErr(ctx, "invoke", method, err)
	}
	out, err := decodeMessage(fr, files, f.c.cfg.MaxBlob)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return Message{}, tooLarge("cluster: invoke %q: the response: %v", method, err)
		}
		return Message{}, fmt.Errorf("cluster: invoke %q: the response: %w", method, err)
	}
	return out, nil
}

func (f *follower) publish(ctx context.Context, topic string, msg Message) error {
	w, err := encodeMessage(f.conn, msg, int(f.welcome.MaxBody), "publish", topic, "the message")
	if err != nil {
		return err
	}
	h := frame.Header{Kind: frame.KindPublish, Flags: w.flags, Timeout: timeoutMillis(ctx)}
	wctx, deadline := deadlineOf(ctx)
	_, files, err := f.conn.Call(wctx, ipc.Request{Header: h, Meta: []byte(topic), Body: w.body, Tail: w.tail, Files: w.files, Deadline: deadline})
	closeFiles(files)
	return f.mapErr(ctx, "publish", topic, err)
}

func subscribeBody(shared bool) []byte {
	if shared {
		return []byte{frame.SubscribeShared}
	}
	return nil
}

func (f *follower) subscribe(ctx context.Context, topic string, shared bool) error {
	_, err := callNoFiles(ctx, f.conn, frame.KindSubscribe, timeoutMillis(ctx), []byte(topic), subscribeBody(shared))
	return f.mapErr(ctx, "subscribe", topic, err)
}

func (f *follower) unsubscribe(ctx context.Context, topic string, shared bool) error {
	_, err := callNoFiles(ctx, f.conn, frame.KindUnsubscribe, timeoutMillis(ctx), []byte(topic), subscribeBody(shared))
	return f.mapErr(ctx, "unsubscribe", topic, err)
}

func (f *follower) register(ctx context.Context, r *Registration) error {
	if limit := int(f.welcome.MaxBody) - frame.RegistrationIDSize; len(r.msg.Data) > limit {
		return tooLarge("cluster: register %q: the payload is %d bytes, over the leader's limit of %d for a registration (Config.MaxBody less %d bytes: raise it on every member)",
			r.topic, len(r.msg.Data), limit, frame.RegistrationIDSize)
	}
	_, err := callNoFiles(ctx, f.conn, frame.KindRegister, timeoutMillis(ctx), []byte(r.topic), frame.AppendRegister(nil, r.id, r.msg.Data))
	return f.mapErr(ctx, "register", r.topic, err)
}

func (f *follower) withdraw(ctx context.Context, r *Registration) error {
	_, err := callNoFiles(ctx, f.conn, frame.KindWithdraw, timeoutMillis(ctx), []byte(r.topic), frame.AppendRegister(nil, r.id, nil))
	return f.mapErr(ctx, "withdraw", r.topic, err)
}

// mapErr turns transport errors into the Client's errors.
func (f *follower) mapErr(ctx context.Context, op, name string, err error) error {
	if err == nil {
		return nil
	}
	var fe *ipc.FrameError
	switch {
	case errors.Is(err, ipc.ErrNotSent):
		return fmt.Errorf("%w: %w", errNotSent, err)
	case errors.Is(err, ipc.ErrConnLost):
		select {
		case <-f.c.closing:
			return fmt.Errorf("cluster: %s %q: %w", op, name, ErrClosed)
		default:
		}
		return fmt.Errorf("cluster: %s %q: %w (term %d, leader pid %d): %w", op, name, ErrLeaderLost, f.welcome.Term, f.welcome.PID, f.conn.Err())
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return ctxErr(ctx, op, name)
	case errors.As(err, &fe):
		switch fe.Code {
		case frame.CodeRemote:
			return &RemoteError{Op: op, Name: name, Message: fe.Message}
		case frame.CodePanic:
			return &RemoteError{Op: op, Name: name, Message: fe.Message, errs: []error{ErrServicePanic}}
		case frame.CodeRemoteCodes:
			codes, msg, err := frame.ParseRemoteCodes([]byte(fe.Message))
			if err != nil {
				return fmt.Errorf("cluster: %s %q: the leader's error: %w", op, name, err)
			}
			return &RemoteError{Op: op, Name: name, Message: msg, Codes: codes, errs: f.c.cfg.errorsFor(codes)}
		case frame.CodeTimeout:
			return errTimeout(op, name)
		case frame.CodeLimit:
			return &detailError{msg: fmt.Sprintf("cluster: %s %q: %s", op, name, fe.Message), is: ErrLimit}
		case frame.CodeTooLarge:
			// The Leader's message names the call, the size, the limit and the remedy.
			return &detailError{msg: fe.Message, is: ErrTooLarge}
		case frame.CodeClosed:
			// The Leader is handing over and did not run the request: send it to the next.
			return fmt.Errorf("%w: %w", errNotSent, fe)
		case frame.CodeUnauthorized:
			return fmt.Errorf("cluster: %s %q: %s: %w", op, name, fe.Message, ErrUnauthorized)
		}
		return fmt.Errorf("cluster: %s %q: leader answered %w: %w", op, name, fe, ErrProtocol)
	}
	return fmt.Errorf("cluster: %s %q: %w", op, name, err)
}

func msDuration(ms uint32) time.Duration { return time.Duration(ms) * time.Millisecond }
