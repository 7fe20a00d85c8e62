package blob_test

import (
	"fmt"
	"os"

	"github.com/cluster-client-go/cluster/blob"
)

// A sender produces a payload in place and passes its File to a receiver, which maps
// the same memory read-only. Here the "receiver" is this process, with a duplicate of
// the descriptor standing in for one received over ipc (Conn.SendParts on one side, a
// FileHandler or Conn.Call on the other). Where descriptors cannot be passed
// (File is nil), send Bytes inline and wrap them with FromBytes on arrival.
func Example() {
	msg := "a large payload, produced in place"
	b, err := blob.Create(len(msg), func(p []byte) error {
		copy(p, msg)
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	var received *blob.Blob
	if f := b.File(); f != nil {
		dup, err := dupFile(f) // what the receiving process gets
		if err != nil {
			fmt.Println(err)
			return
		}
		received, err = blob.Open(dup) // checks the seals, maps read-only
		if err != nil {
			fmt.Println(err)
			return
		}
	} else {
		received = blob.FromBytes(append([]byte(nil), b.Bytes()...))
	}
	defer received.Close()
	fmt.Printf("%d bytes: %s\n", received.Len(), received.Bytes())
	// Output: 34 bytes: a large payload, produced in place
}

// dupFile duplicates f's descriptor, as passing it to another process would.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dup *os.File
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = dupFD(fd) }); err != nil {
		return nil, err
	}
	return dup, derr
}
