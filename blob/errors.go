package blob

import "errors"

// ErrNotSealed is returned by Open when the descriptor is not a memfd sealed against
// write, grow and shrink: its owner could change the bytes under the receiver. (Linux
// only; other systems have no seals to check.)
var ErrNotSealed = errors.New("blob: descriptor is not a sealed memfd")
