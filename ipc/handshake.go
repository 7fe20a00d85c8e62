package ipc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// handshakeLimits bounds the hello and welcome frames: both are tiny.
var handshakeLimits = frame.Limits{MaxMeta: 1 << 10, MaxBody: 4 << 10}

// ClientHandshake sends hello on nc and waits, until deadline, for the Leader's welcome.
// A refusal is an error matching ErrPeerRefused that carries the Leader's *FrameError;
// bytes that are not this protocol are an error matching ErrNotOurProtocol.
func ClientHandshake(nc net.Conn, hello frame.Hello, deadline time.Time) (frame.Welcome, error) {
	if err := nc.SetDeadline(deadline); err != nil {
		return frame.Welcome{}, err
	}
	defer nc.SetDeadline(time.Time{})
	// A Leader that refuses us (peer credentials) may answer and close before our hello
	// is written: the write then fails (EPIPE) but the reason is readable, so read it.
	werr := frame.Write(nc, frame.Header{Kind: frame.KindHello}, nil, hello.Append(nil))
	// Judge the first byte alone: a program that is not ours (a banner shorter than a
	// header, say) is recognised at once instead of after the deadline. Reading it
	// separately never reads past the welcome, whose followers belong to the Conn.
	var first [1]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		if werr != nil {
			return frame.Welcome{}, fmt.Errorf("sending hello: %w", werr)
		}
		return frame.Welcome{}, fmt.Errorf("waiting for welcome: %w", err)
	}
	if first[0] != frame.Version {
		return frame.Welcome{}, fmt.Errorf("%w: the answer starts with byte %#02x (%q), not protocol version %d", ErrNotOurProtocol, first[0], first[0], frame.Version)
	}
	f, err := frame.Read(io.MultiReader(bytes.NewReader(first[:]), nc), handshakeLimits)
	if err != nil && werr != nil {
		return frame.Welcome{}, fmt.Errorf("sending hello: %w", werr)
	}
	if err != nil {
		if errors.Is(err, frame.ErrProtocol) || errors.Is(err, frame.ErrTooLarge) {
			return frame.Welcome{}, fmt.Errorf("%w: %w", ErrNotOurProtocol, err)
		}
		return frame.Welcome{}, fmt.Errorf("waiting for welcome: %w", err)
	}
	switch f.Kind {
	case frame.KindWelcome:
		w, err := frame.ParseWelcome(f.Body)
		if err != nil {
			return frame.Welcome{}, fmt.Errorf("%w: %w", ErrNotOurProtocol, err)
		}
		return w, nil
	case frame.KindError:
		return frame.Welcome{}, fmt.Errorf("%w: %w", ErrPeerRefused, &FrameError{Code: string(f.Meta), Message: string(f.Body)})
	}
	return frame.Welcome{}, fmt.Errorf("%w: expected welcome, got %s", ErrNotOurProtocol, f.Kind)
}

// ServerHandshake reads the hello on nc until deadline and asks accept for the welcome.
// A wrong version, a malformed hello or a refusal by accept is answered with an error
// frame saying why before the error is returned; the caller then closes nc.
func ServerHandshake(nc net.Conn, deadline time.Time, accept func(frame.Hello) (frame.Welcome, *FrameError)) (frame.Hello, error) {
	if err := nc.SetDeadline(deadline); err != nil {
		return frame.Hello{}, err
	}
	defer nc.SetDeadline(time.Time{})
	refuse := func(code, msg string, cause error) (frame.Hello, error) {
		_ = frame.Write(nc, frame.Header{Kind: frame.KindError}, []byte(code), []byte(msg))
		return frame.Hello{}, cause
	}
	f, err := frame.Read(nc, handshakeLimits)
	switch {
	case errors.Is(err, frame.ErrVersion):
		return refuse(frame.CodeVersion, fmt.Sprintf("this leader speaks protocol version %d only", frame.Version), err)
	case errors.Is(err, frame.ErrProtocol), errors.Is(err, frame.ErrTooLarge):
		return refuse(frame.CodeProtocol, "expected a hello frame", err)
	case err != nil:
		return frame.Hello{}, fmt.Errorf("waiting for hello: %w", err)
	}
	if f.Kind != frame.KindHello {
		return refuse(frame.CodeProtocol, "expected a hello frame", fmt.Errorf("%w: first frame is %s, not hello", frame.ErrProtocol, f.Kind))
	}
	h, err := frame.ParseHello(f.Body)
	if err != nil {
		return refuse(frame.CodeProtocol, "malformed hello", err)
	}
	if h.MinVersion > frame.Version || h.MaxVersion < frame.Version {
		msg := fmt.Sprintf("this leader speaks protocol version %d; the peer speaks %d..%d", frame.Version, h.MinVersion, h.MaxVersion)
		return refuse(frame.CodeVersion, msg, fmt.Errorf("%w: %s", frame.ErrVersion, msg))
	}
	w, ferr := accept(h)
	if ferr != nil {
		return refuse(ferr.Code, ferr.Message, fmt.Errorf("%w: %w", ErrPeerRefused, ferr))
	}
	w.Version = frame.Version
	if err := frame.Write(nc, frame.Header{Kind: frame.KindWelcome}, nil, w.Append(nil)); err != nil {
		return frame.Hello{}, fmt.Errorf("sending welcome: %w", err)
	}
	return h, nil
}
