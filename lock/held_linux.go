package lock

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Held reports whether some process holds a flock on the lock file at path, without
// taking or testing the lock itself: it looks the file's inode up in /proc/locks. known
// is false where that cannot be told (no such file, /proc/locks unreadable). It never
// creates, opens for writing or locks anything, so a status tool may call it freely.
func Held(path string) (held, known bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, false
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return false, false
	}
	defer f.Close()
	// Each line: "1: FLOCK  ADVISORY  WRITE 1234 08:01:131 0 EOF" (blocked waiters start
	// with "1: -> FLOCK"). The device is major:minor in hex, the inode in decimal.
	major, minor := uint64(unix.Major(st.Dev)), uint64(unix.Minor(st.Dev))
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		if fields[5] == want || sameDevIno(fields[5], major, minor, st.Ino) {
			return true, true
		}
	}
	return false, sc.Err() == nil
}

// sameDevIno compares a /proc/locks "maj:min:ino" field numerically (its width varies).
func sameDevIno(field string, major, minor, ino uint64) bool {
	parts := strings.Split(field, ":")
	if len(parts) != 3 {
		return false
	}
	ma, err1 := strconv.ParseUint(parts[0], 16, 64)
	mi, err2 := strconv.ParseUint(parts[1], 16, 64)
	in, err3 := strconv.ParseUint(parts[2], 10, 64)
	return err1 == nil && err2 == nil && err3 == nil && ma == major && mi == minor && in == ino
}
