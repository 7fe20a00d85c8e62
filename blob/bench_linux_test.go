package blob

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

var benchSizes = []int{1 << 20, 16 << 20, 64 << 20}

// BenchmarkNew is the sender's cost: memfd, copy in, seal, map.
func BenchmarkNew(b *testing.B) {
	for _, size := range benchSizes {
		data := pattern(size)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				bl, err := New(data)
				if err != nil {
					b.Fatal(err)
				}
				bl.Close()
			}
		})
	}
}

// BenchmarkOpen is the receiver's cost for a descriptor it got: check the seals, map
// read-only. It should not depend on the size.
func BenchmarkOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			bl, err := New(pattern(size))
			if err != nil {
				b.Fatal(err)
			}
			defer bl.Close()
			b.SetBytes(int64(size))
			for b.Loop() {
				fd, err := unix.Dup(int(bl.File().Fd())) // stands in for the received descriptor
				if err != nil {
					b.Fatal(err)
				}
				r, err := Open(os.NewFile(uintptr(fd), "dup"))
				if err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
