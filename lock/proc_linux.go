package lock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// selfOnce caches this process's identity for the lock record.
var selfOnce = sync.OnceValue(func() Owner {
	o := Owner{PID: os.Getpid()}
	// Only a /proc of our own pid namespace numbers processes as we do (a container may
	// see its host's): otherwise record no identity, and nobody will wait on it.
	if pid, start, err := readStat("self"); err == nil && pid == o.PID {
		o.Start = start
		o.PIDNS, _ = pidNamespace()
	}
	return o
})

// self is the record this process writes when it wins (Term left to the caller).
func self() Owner { return selfOnce() }

// pidNamespace returns the inode of this process's pid namespace.
func pidNamespace() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// startTime returns the start time of process pid in clock ticks since boot. Together
// with the pid it names one process for the life of a boot.
func startTime(pid int) (uint64, error) {
	_, start, err := readStat(strconv.Itoa(pid))
	return start, err
}

// readStat reads fields 1 (the pid, as this /proc numbers it) and 22 (the start time)
// of /proc/<name>/stat.
func readStat(name string) (pid int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + name + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or ')'.
	open, i := bytes.IndexByte(b, ' '), bytes.LastIndexByte(b, ')')
	if open < 0 || i < open {
		return 0, 0, errors.New("malformed stat")
	}
	if pid, err = strconv.Atoi(string(b[:open])); err != nil {
		return 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:])) // starts at field 3
	if len(f) < 20 {
		return 0, 0, errors.New("malformed stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return pid, start, err
}

// openHolder returns a non-blocking pidfd of the process o describes, once it checked
// that o's pid still names that process; it fails as ExitFile says.
func openHolder(o Owner) (int, error) {
	me := self()
	if o.PID <= 0 || o.PID == me.PID || o.Start == 0 || o.PIDNS == 0 || o.PIDNS != me.PIDNS {
		return -1, fmt.Errorf("lock: %s cannot be watched from this process", o)
	}
	fd, err := unix.PidfdOpen(o.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("lock: watching %s: %w", o, err)
	}
	// The pidfd pins whatever process has the pid now: check it is the holder.
	if start, err := startTime(o.PID); err != nil || start != o.Start {
		unix.Close(fd)
		return -1, fmt.Errorf("lock: %s is no longer running", o)
	}
	return fd, nil
}

// ExitFile returns a pidfd of the process o describes: a descriptor that becomes
// readable when that process has completely exited, which means its flock is released
// (the kernel closes a process's files before it reports the exit). A member that
// follows o's Leader waits on it, with poll or Go's poller, instead of polling the
// lock. The descriptor is non-blocking; the caller closes it. It fails, with nothing to
// close, when o is this process, lives in another pid namespace, is no longer running,
// or its pid now belongs to another process.
func ExitFile(o Owner) (*os.File, error) {
	fd, err := openHolder(o)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}

// WaitExited waits, at most limit, until the process o describes has completely exited:
// all its descriptors closed, not only the lock. The kernel releases a killed process's
// flock while it is still closing its other descriptors, so a new Leader that waits here
// before it connects upstream is never seen by a server beside its predecessor's
// half-closed connection. It returns at once when o is this process, lives in another
// pid namespace (its pid means nothing here), is no longer running, or its pid now
// belongs to another process; and an error only when the wait timed out.
func WaitExited(o Owner, limit time.Duration) error {
	fd, err := openHolder(o)
	if err != nil {
		return nil // gone, reused, or not ours to watch: nothing to wait on
	}
	defer unix.Close(fd)
	// poll reports the exit whether or not the pidfd is non-blocking (that flag is for waitid).
	deadline := time.Now().Add(limit)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return fmt.Errorf("lock: the previous holder (%s) has not finished exiting after %v", o, limit)
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return nil // readable: the process has exited
		}
	}
}

// State describes the process o records, as /proc says: "running", "sleeping",
// "stopped" (SIGSTOP, a debugger), "zombie", "exited" (no such process, or its pid now
// belongs to another), or "" when it cannot be told from here (another pid namespace,
// no identity recorded). It is for messages, like o.
func (o Owner) State() string {
	me := self()
	if o.PID <= 0 || o.Start == 0 || o.PIDNS == 0 || o.PIDNS != me.PIDNS {
		return ""
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(o.PID) + "/stat")
	if err != nil {
		return "exited"
	}
	if start, err := startTime(o.PID); err != nil || start != o.Start {
		return "exited"
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	switch b[i+2] {
	case 'R':
		return "running"
	case 'S', 'D', 'I':
		return "sleeping"
	case 'T', 't':
		return "stopped"
	case 'Z':
		return "zombie"
	}
	return ""
}
