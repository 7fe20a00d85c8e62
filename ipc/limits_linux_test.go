package ipc

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/fdtest"
)

// The descriptors passed with a frame that does not arrive in time are closed with its
// Conn, and the peer reads why.
func TestDescriptorsOfAFrameNotCompleteInTimeAreClosed(t *testing.T) {
	for _, m := range readerModes {
		t.Run(m.name, func(t *testing.T) {
			before := fdtest.Take(t)
			mode := m.opts
			mode.FrameTimeout = 50 * time.Millisecond
			v := newRawVictim(t, true, mode)
			b := header(frame.KindMessage, 0, 2, "t", string(make([]byte, 1<<20)))
			pipes := []*os.File{pipeWith(t, "a"), pipeWith(t, "b")}
			v.send(t, b[:4<<10], pipes...)
			closeFiles(pipes) // the Conn received its own
			<-v.c.Done()
			require.ErrorIs(t, v.c.Err(), ErrFrameTimeout)

			fd, err := unix.Dup(v.peer)
			require.NoError(t, err)
			f := os.NewFile(uintptr(fd), "peer")
			nc, err := net.FileConn(f)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			requireFailFrame(t, nc, frame.CodeLimit)
			require.NoError(t, nc.Close())
			v.close()
			before.RequireNoneAdded(t)
		})
	}
}
