package frame

import (
	"encoding/binary"
	"fmt"
)

// RegistrationIDSize is the size of the registration id that starts the body of
// register and withdraw frames.
const RegistrationIDSize = 8

// AppendRegister appends a register frame's body to dst: the 8-byte registration id
// (chosen by the Follower, unique among its live registrations on this connection),
// then the payload.
func AppendRegister(dst []byte, id uint64, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, id)
	return append(dst, payload...)
}

// ParseRegister splits a register frame's body into the registration id and the
// payload, which aliases body.
func ParseRegister(body []byte) (id uint64, payload []byte, err error) {
	if len(body) < RegistrationIDSize {
		return 0, nil, fmt.Errorf("frame: register body is %d bytes, shorter than its %d-byte registration id: %w", len(body), RegistrationIDSize, ErrProtocol)
	}
	return binary.BigEndian.Uint64(body), body[RegistrationIDSize:], nil
}

// ParseWithdraw returns the registration id a withdraw frame's body names.
func ParseWithdraw(body []byte) (uint64, error) {
	if len(body) != RegistrationIDSize {
		return 0, fmt.Errorf("frame: withdraw body is %d bytes, want the %d-byte registration id: %w", len(body), RegistrationIDSize, ErrProtocol)
	}
	return binary.BigEndian.Uint64(body), nil
}
