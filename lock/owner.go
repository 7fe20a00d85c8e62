package lock

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// recordSize is the fixed size of the record a winner writes: "term=<n> pid=<n>", then on
// Linux "start=<n> pidns=<n>", padded with spaces, then a newline. Every record has the
// same size, so each write covers the previous one completely and the file never needs
// truncating. The longest record (every number at its maximum) is 113 bytes.
const recordSize = 128

// maxRecordRead bounds how much of a lock file is read to parse a record.
const maxRecordRead = 4096

// Owner is what the lock file says about its current or last holder. It is advisory: it is
// for error messages ("lock held by pid 1234, term 7"), never for deciding anything. The pid
// may have exited, or been reused, and the holder may live in another pid namespace.
type Owner struct {
	Term uint64 // the term the holder won; 0 if no member ever won this file
	PID  int    // the holder's pid, as seen in its own pid namespace
	// Start and PIDNS identify the holder's process beyond its pid (0 when unknown):
	// its start time in clock ticks since boot, and the inode of its pid namespace.
	// WaitExited uses them to tell the holder from a process that reused its pid.
	Start, PIDNS uint64
}

// String describes the owner for a message: "pid 1234, term 7", or "no recorded holder".
func (o Owner) String() string {
	if o == (Owner{}) {
		return "no recorded holder"
	}
	return fmt.Sprintf("pid %d, term %d", o.PID, o.Term)
}

// record is the fixed-size form written into the lock file.
func (o Owner) record() []byte {
	b := make([]byte, recordSize)
	s := fmt.Sprintf("term=%d pid=%d", o.Term, o.PID)
	if o.Start != 0 || o.PIDNS != 0 {
		s += fmt.Sprintf(" start=%d pidns=%d", o.Start, o.PIDNS)
	}
	n := copy(b, s)
	for i := n; i < recordSize-1; i++ {
		b[i] = ' '
	}
	b[recordSize-1] = '\n'
	return b
}

// parseRecord reads a record. An empty record (a new file, or only NUL bytes, or blanks) is
// the zero Owner. Fields other than term and pid are ignored; both of those are required.
func parseRecord(b []byte) (Owner, error) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	s := strings.TrimSpace(strings.Trim(string(b), "\x00"))
	if s == "" {
		return Owner{}, nil
	}
	var o Owner
	var haveTerm, havePID bool
	for _, field := range strings.Fields(s) {
		key, val, ok := strings.Cut(field, "=")
		if !ok {
			return Owner{}, fmt.Errorf("field %q is not key=value", field)
		}
		switch key {
		case "term":
			t, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return Owner{}, fmt.Errorf("bad term %q", val)
			}
			o.Term, haveTerm = t, true
		case "pid":
			p, err := strconv.Atoi(val)
			if err != nil || p < 0 {
				return Owner{}, fmt.Errorf("bad pid %q", val)
			}
			o.PID, havePID = p, true
		case "start", "pidns":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return Owner{}, fmt.Errorf("bad %s %q", key, val)
			}
			if key == "start" {
				o.Start = n
			} else {
				o.PIDNS = n
			}
		}
	}
	if !haveTerm || !havePID {
		return Owner{}, fmt.Errorf("record %q lacks term= or pid=", s)
	}
	return o, nil
}

// readRecord reads and parses the record of the open lock file f.
func readRecord(f *os.File, path string) (Owner, error) {
	b, err := readAtMost(f, recordOffset, maxRecordRead)
	if err != nil {
		return Owner{}, fmt.Errorf("lock: reading %s: %w", path, err)
	}
	o, err := parseRecord(b)
	if err != nil {
		return Owner{}, fmt.Errorf("lock: %s does not hold a lock record (%v); stop every member using it, then remove it", path, err)
	}
	return o, nil
}

// ReadOwner reads the record of the lock file at path without locking it: it opens the file
// O_RDONLY|O_NOFOLLOW, never creates or writes it, and does not block on the lock. A missing
// file returns an error matching fs.ErrNotExist; a file no member has won yet returns the
// zero Owner. The answer may be stale by the time it is used: it is for messages only.
func ReadOwner(path string) (Owner, error) {
	f, err := os.OpenFile(path, recordFlag|os.O_RDONLY, 0)
	if err != nil {
		if isSymlinkError(path, err) {
			return Owner{}, fmt.Errorf("lock: %s is a symbolic link; refusing to follow it: %w", path, err)
		}
		return Owner{}, fmt.Errorf("lock: reading the owner: %w", err)
	}
	defer f.Close()
	return readRecord(f, path)
}
