package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameWatch wakes its waiter when a file is renamed or created into a directory: how
// a scaling floor client learns that a server listens without asking again and again.
type renameWatch struct {
	f   *os.File
	buf []byte
}

func newRenameWatch(dir, _ string) (*renameWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &renameWatch{f: os.NewFile(uintptr(fd), "inotify"), buf: make([]byte, 64<<10)}, nil
}

// wait returns after the next batch of events (any name: the caller looks again).
func (w *renameWatch) wait() { _, _ = w.f.Read(w.buf) }
