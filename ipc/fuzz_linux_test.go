package ipc

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/fdtest"
)

// fuzzSegments encodes sendmsg calls for FuzzFDReader: each is a control byte (low 6
// bits: length-1, high 2 bits: descriptors to attach) and that many bytes.
func fuzzSegments(frames ...[]byte) []byte {
	var out []byte
	for _, b := range frames {
		fds := int(b[3]) // the frame's own declaration, for a well-behaved seed
		for first := true; len(b) > 0; first = false {
			n := min(len(b), 64)
			ctl := byte(n - 1)
			if first {
				ctl |= byte(fds) << 6
			}
			out = append(append(out, ctl), b[:n]...)
			b = b[n:]
		}
	}
	return out
}

// FuzzFDReader drives a Conn's descriptor-aware reader with arbitrary bytes cut into
// arbitrary sendmsgs carrying 0-3 descriptors. Whatever arrives, every frame delivered
// carries as many files as it declares, and once the Conn is closed every descriptor
// received is closed too.
func FuzzFDReader(f *testing.F) {
	msg := func(fds uint8, body string) []byte {
		return frame.AppendFrame(nil, frame.Header{Kind: frame.KindMessage, FDs: fds}, []byte("t"), []byte(body))
	}
	f.Add(fuzzSegments(msg(0, "plain"), msg(1, "one"), msg(0, "x"), msg(3, string(make([]byte, 150)))))
	f.Add(fuzzSegments(msg(2, "two"), msg(2, "two again")))
	f.Add(append(fuzzSegments(msg(0, "a")), 0x40|5, 1, 9, 0, 0, 0, 0)) // descriptors with a broken header
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range readerModes {
			fuzzFDReaderOnce(t, data, m.opts)
		}
	})
}

// fuzzFDReaderOnce feeds data, as FuzzFDReader describes, to a Conn with mode's options.
func fuzzFDReaderOnce(t *testing.T, data []byte, mode Options) {
	before := fdtest.Take(t)
	v := newRawVictim(t, true, mode)
	pipes := []*os.File{pipeWith(t, ""), pipeWith(t, ""), pipeWith(t, "")}
	for len(data) > 0 {
		ctl := data[0]
		n := min(int(ctl&0x3f)+1, len(data)-1)
		seg := data[1 : 1+n]
		data = data[1+n:]
		if n == 0 {
			break
		}
		var oob []byte
		if k := int(ctl >> 6); k > 0 {
			fds := make([]int, k)
			for i := range fds {
				fds[i] = int(pipes[i].Fd())
			}
			oob = unix.UnixRights(fds...)
		}
		if _, err := unix.SendmsgN(v.peer, seg, oob, nil, unix.MSG_DONTWAIT); err != nil {
			break // the Conn gave up and its socket buffer filled, or it closed
		}
	}
	closeFiles(pipes)
	_ = unix.Shutdown(v.peer, unix.SHUT_WR)
	for done := false; !done; {
		select {
		case got := <-v.got:
			if len(got.files) != int(got.f.FDs) {
				t.Errorf("%s frame declaring %d descriptors delivered with %d", got.f.Kind, got.f.FDs, len(got.files))
			}
			closeFiles(got.files)
		case <-v.c.Done():
			done = true
		case <-time.After(10 * time.Second):
			t.Fatal("the Conn neither ended nor delivered")
		}
	}
	v.close()
	for {
		select {
		case got := <-v.got: // delivered just before the end
			closeFiles(got.files)
			continue
		default:
		}
		break
	}
	before.RequireNoneAdded(t)
}
