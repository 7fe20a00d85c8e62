package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// dirWatch is one inotify watch of a directory, shared by the heralds of every Client
// of this process that uses it (a user has only 128 inotify instances by default). Its
// goroutine tells each herald when a name it is interested in is created or renamed
// into the directory, and when the lock file's times change (touchLock).
type dirWatch struct {
	dir  string
	f    *os.File
	done chan struct{}        // closed when the reading goroutine returned
	dead atomic.Bool          // the watch ended (the directory was removed or moved)
	subs map[*herald]struct{} // guarded by dirWatches.mu
}

// dirWatches are the process's directory watches by path. Its lock is a leaf.
var dirWatches = struct {
	mu sync.Mutex
	m  map[string]*dirWatch
}{m: map[string]*dirWatch{}}

// watchDir subscribes h to the watch of dir, starting one if needed; nil when dir
// cannot be watched.
func watchDir(dir string, h *herald) *dirWatch {
	dirWatches.mu.Lock()
	defer dirWatches.mu.Unlock()
	if w := dirWatches.m[dir]; w != nil {
		w.subs[h] = struct{}{}
		return w
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ATTRIB|unix.IN_ONLYDIR); err != nil {
		_ = unix.Close(fd)
		return nil
	}
	w := &dirWatch{dir: dir, f: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{}), subs: map[*herald]struct{}{h: {}}}
	dirWatches.m[dir] = w
	go w.read()
	return w
}

func (w *dirWatch) alive() bool { return !w.dead.Load() }

// read hands the events to the subscribers until the watch is closed or ends.
func (w *dirWatch) read() {
	defer close(w.done)
	buf := make([]byte, 4096)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.end()
			}
			return
		}
		for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
			mask := binary.NativeEndian.Uint32(b[4:8])
			size := int(binary.NativeEndian.Uint32(b[12:16]))
			if len(b) < unix.SizeofInotifyEvent+size {
				break
			}
			name := b[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+size]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			b = b[unix.SizeofInotifyEvent+size:]
			switch {
			case mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0:
				w.end()
				return
			case mask&unix.IN_Q_OVERFLOW != 0:
				for _, h := range w.subscribers() {
					h.leaving()
				}
				w.tell(func(*herald) bool { return true })
			case mask&unix.IN_ATTRIB != 0:
				for _, h := range w.subscribers() {
					if h.isLock(string(name)) { // a Leader is handing over (see touchLock)
						h.leaving()
					}
				}
			default:
				s := string(name)
				w.tell(func(h *herald) bool { return h.interested(s) })
			}
		}
	}
}

// subscribers returns the heralds the watch serves now, for calls made outside
// dirWatches.mu (a leaf).
func (w *dirWatch) subscribers() []*herald {
	dirWatches.mu.Lock()
	defer dirWatches.mu.Unlock()
	hs := make([]*herald, 0, len(w.subs))
	for h := range w.subs {
		hs = append(hs, h)
	}
	return hs
}

// tell notifies the subscribers that want to know.
func (w *dirWatch) tell(want func(*herald) bool) {
	dirWatches.mu.Lock()
	defer dirWatches.mu.Unlock()
	for h := range w.subs {
		if want(h) {
			h.notify()
		}
	}
}

// end marks the watch dead, waking every subscriber so that it retries as it would
// without one; the next herald to watch the directory, or one of these when it
// watches again, starts a new watch.
func (w *dirWatch) end() {
	w.dead.Store(true)
	dirWatches.mu.Lock()
	if dirWatches.m[w.dir] == w {
		delete(dirWatches.m, w.dir)
	}
	dirWatches.mu.Unlock()
	w.tell(func(*herald) bool { return true })
}

// remove unsubscribes h, and closes the watch when no herald is left.
func (w *dirWatch) remove(h *herald) {
	dirWatches.mu.Lock()
	delete(w.subs, h)
	last := len(w.subs) == 0
	if last && dirWatches.m[w.dir] == w {
		delete(dirWatches.m, w.dir)
	}
	dirWatches.mu.Unlock()
	if last {
		_ = w.f.Close()
		<-w.done
	}
}

// touchLock tells the Followers that watch Dir that their Leader is handing over: it
// sets the lock file's times to now, which their watches see (IN_ATTRIB). A Follower
// whose connection rests between calls then reads the goodbye at once
// (ipc.Conn.ReadNow) instead of when its rest ends, and the handover does not wait for
// it. Times set to now need only write access to the file, which a Leader of another
// uid admitted by the lock file's group has, not ownership.
func touchLock(path string) {
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, path, now, 0)
}
