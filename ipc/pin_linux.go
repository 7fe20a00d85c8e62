package ipc

import (
	"os"

	"golang.org/x/sys/unix"
)

// pinInode opens path with O_PATH (which works on a socket file, unlike a plain open):
// while the descriptor is open the inode lives on, and no other file can get its number.
func pinInode(path string) *os.File {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), path)
}
