package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cluster-client-go/cluster/lock"
)

// quietBackoff is the shortest wait between an electing member's attempts while a
// herald watches for it: the waits end early on news, and the attempts they still
// make are for what sends none (a winner that died before it listened).
const quietBackoff = 25 * time.Millisecond

// herald wakes an electing member when what it waits for may have happened: the
// process of the Leader it followed has exited (its lock is free then), or a Leader
// has put its socket, or over TCP its token file, in place in Dir. With it, the
// survivors of a Leader's death sleep until then instead of retrying every
// fastBackoff, whose retries compete with the next Leader for the CPU. Measured with
// 64 Follower processes on 2 cores (bench -only scale, interleaved with the polling
// version, load 11-22): the survivors' lock and dial attempts per failover fell from
// 330-680 to 150-210, and the new Leader's CPU time per failover from 39-42 ms to
// 30-37 ms (4 pairs of runs); the times to serve were within the noise of that load
// (docs/performance.md, "Scaling with the Followers"). Where Dir or processes cannot
// be watched (off Linux, another pid namespace, no inotify instance left: a user has
// 128 by default) it says so, and the member retries as fast as before.
//
// The run goroutine calls its methods, except notify and leaving (the watches'
// goroutines).
type herald struct {
	wake    chan struct{} // holds a value when something may have changed
	dir     string        // Config.Dir
	names   []string      // base names in Dir that announce a Leader
	lock    string        // the lock file's base name: a Leader touches it as it hands over
	watcher *dirWatch     // nil: Dir is not watched (only a Follower watches it)

	// left runs when the Leader followed is going: its process exited, or it touched
	// the lock file as it hands over. Set by follow, cleared by stopExit; the watches'
	// goroutines call it.
	left atomic.Pointer[func()]

	exit     *os.File      // the followed Leader's pidfd; nil when not watched
	exitDone chan struct{} // closed when the goroutine waiting on exit returned
	watched  bool          // the Leader last followed is watched, and left by dying
}

func newHerald(cfg *config) *herald {
	return &herald{
		wake:  make(chan struct{}, 1),
		dir:   cfg.Dir,
		names: []string{filepath.Base(cfg.sockPath), filepath.Base(cfg.Name + ".token")},
		lock:  filepath.Base(cfg.lockPath),
	}
}

// isLock reports whether name is the lock file's.
func (h *herald) isLock(name string) bool { return name == h.lock }

// leaving tells the member that the Leader it follows may be going (see left).
func (h *herald) leaving() {
	if f := h.left.Load(); f != nil {
		(*f)()
	}
}

// watch starts watching Dir, if it is not watched yet and can be. A watch that ended
// (Dir was removed or moved) is dropped, and Dir, perhaps made again, watched anew.
func (h *herald) watch() {
	if h.watcher != nil && !h.watcher.alive() {
		h.watcher.remove(h)
		h.watcher = nil
	}
	if h.watcher == nil {
		h.watcher = watchDir(h.dir, h)
	}
}

// notify records that something may have changed; it never blocks.
func (h *herald) notify() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// interested reports whether the appearance of name in Dir is news.
func (h *herald) interested(name string) bool { return slices.Contains(h.names, name) }

// drain forgets older news: an election looks at everything again at its start.
func (h *herald) drain() {
	select {
	case <-h.wake:
	default:
	}
}

// quiet reports whether an electing member may wait for news instead of retrying
// fast: Dir is watched, and the Leader it lost is watched until its process exits.
func (h *herald) quiet() bool { return h.watched && h.watcher != nil && h.watcher.alive() }

// follow starts watching for the exit of the Leader just followed (its pid as it
// said in the welcome), if the lock file names that process and it can be watched,
// and for its handover if Dir can be watched. left runs, on a watch's goroutine, when
// the process has exited or the Leader touched the lock file (touchLock).
func (h *herald) follow(lockPath string, pid int, left func()) {
	h.stopExit()
	h.watch()
	h.left.Store(&left)
	o, err := lock.ReadOwner(lockPath)
	if err != nil || o.PID != pid {
		return
	}
	f, err := lock.ExitFile(o)
	if err != nil {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return
	}
	h.exit, h.exitDone, h.watched = f, make(chan struct{}), true
	done := h.exitDone
	go func() {
		defer close(done)
		polled := false
		// The first call finds the process alive (or not: the poller then reports the
		// pidfd readable at once); the second runs once it is readable.
		if err := rc.Read(func(uintptr) bool { ok := polled; polled = true; return ok }); err == nil {
			left()
			h.notify()
		}
	}()
}

// leftGracefully records that the Leader followed said goodbye: it releases the lock
// and may go on running, so its exit is no news to wait for.
func (h *herald) leftGracefully() { h.watched = false }

// stopExit stops watching the Leader followed last.
func (h *herald) stopExit() {
	h.left.Store(nil)
	h.watched = false
	if h.exit != nil {
		_ = h.exit.Close()
		<-h.exitDone
		h.exit, h.exitDone = nil, nil
	}
}

// lead stops every watch of h: a Leader waits for nothing (and keeps its descriptors
// for its Followers).
func (h *herald) lead() {
	h.stopExit()
	if h.watcher != nil {
		h.watcher.remove(h)
		h.watcher = nil
	}
}

// close stops every watch of h.
func (h *herald) close() { h.lead() }
