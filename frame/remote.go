package frame

import "fmt"

// MaxCode is the longest application error code a remote-codes error body carries, and
// MaxCodes the most codes it carries.
const (
	MaxCode  = 64
	MaxCodes = 32
)

// ValidCode reports whether code can travel in a remote-codes error body: 1 to MaxCode
// bytes of ASCII letters, digits and ". _ - : /".
func ValidCode(code string) bool {
	if len(code) == 0 || len(code) > MaxCode {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '-', c == ':', c == '/':
		default:
			return false
		}
	}
	return true
}

// AppendRemoteCodes appends the body of a CodeRemoteCodes error frame to dst: a count
// (u8), that many codes (each a u8 length and its bytes), then the message. It panics if
// there are more than MaxCodes codes or one is not ValidCode: callers validate them.
func AppendRemoteCodes(dst []byte, codes []string, msg string) []byte {
	if len(codes) > MaxCodes {
		panic(fmt.Sprintf("frame: %d error codes, the limit is %d", len(codes), MaxCodes))
	}
	dst = append(dst, byte(len(codes)))
	for _, c := range codes {
		if !ValidCode(c) {
			panic(fmt.Sprintf("frame: invalid error code %q", c))
		}
		dst = append(dst, byte(len(c)))
		dst = append(dst, c...)
	}
	return append(dst, msg...)
}

// ParseRemoteCodes splits the body of a CodeRemoteCodes error frame into its codes and
// its message. A truncated body, more than MaxCodes codes or an invalid code is an
// error matching ErrProtocol. It never panics.
func ParseRemoteCodes(body []byte) (codes []string, msg string, err error) {
	if len(body) == 0 {
		return nil, "", fmt.Errorf("frame: remote-codes error body is empty: %w", ErrProtocol)
	}
	n := int(body[0])
	if n > MaxCodes {
		return nil, "", fmt.Errorf("frame: remote-codes error body has %d codes, the limit is %d: %w", n, MaxCodes, ErrProtocol)
	}
	b := body[1:]
	codes = make([]string, 0, n)
	for i := 0; i < n; i++ {
		if len(b) == 0 || len(b) < 1+int(b[0]) {
			return nil, "", fmt.Errorf("frame: remote-codes error body truncated in code %d of %d: %w", i+1, n, ErrProtocol)
		}
		c := string(b[1 : 1+int(b[0])])
		if !ValidCode(c) {
			return nil, "", fmt.Errorf("frame: remote-codes error body: invalid code %q: %w", c, ErrProtocol)
		}
		codes = append(codes, c)
		b = b[1+int(b[0]):]
	}
	return codes, string(b), nil
}
