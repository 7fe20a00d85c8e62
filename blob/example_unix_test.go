//go:build unix

package blob_test

import (
	"os"

	"golang.org/x/sys/unix"
)

func dupFD(fd uintptr) (*os.File, error) {
	d, err := unix.Dup(int(fd))
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(d)
	return os.NewFile(uintptr(d), "dup"), nil
}
