package frame

import (
	"encoding/binary"
	"fmt"
)

// InlineBlobHeaderSize is the size of the length that starts a FlagInlineBlob body.
const InlineBlobHeaderSize = 4

// AppendInlineBlob appends the body of a FlagInlineBlob frame to dst: the length of
// data, data, then the blob's bytes.
func AppendInlineBlob(dst, data, blob []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	dst = append(dst, data...)
	return append(dst, blob...)
}

// InlineBlobSize is the body size AppendInlineBlob produces.
func InlineBlobSize(data, blob int) int { return InlineBlobHeaderSize + data + blob }

// SplitInlineBlob splits a FlagInlineBlob body into the inline data and the blob's
// bytes; both alias body.
func SplitInlineBlob(body []byte) (data, blob []byte, err error) {
	if len(body) < InlineBlobHeaderSize {
		return nil, nil, fmt.Errorf("frame: inline-blob body is %d bytes, shorter than its %d-byte length: %w", len(body), InlineBlobHeaderSize, ErrProtocol)
	}
	n := binary.BigEndian.Uint32(body)
	rest := body[InlineBlobHeaderSize:]
	if uint64(n) > uint64(len(rest)) {
		return nil, nil, fmt.Errorf("frame: inline-blob body says its data is %d bytes, but only %d follow: %w", n, len(rest), ErrProtocol)
	}
	return rest[:n:n], rest[n:], nil
}
