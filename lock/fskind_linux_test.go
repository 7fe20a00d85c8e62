package lock

import (
	"bufio"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMountTypeOf(t *testing.T) {
	const mountinfo = `22 1 0:21 / /proc rw,nosuid - proc proc rw
30 1 0:45 / /run/user/1000 rw,nosuid shared:7 - tmpfs tmpfs rw,mode=700
61 30 0:52 / /mnt/host rw,relatime shared:33 master:1 - virtiofs myfs rw
62 30 0:53 / /mnt/ssh rw - fuse.sshfs user@host: rw,user_id=0
`
	for dev, want := range map[string]string{"0:52": "virtiofs", "0:53": "fuse.sshfs", "0:45": "tmpfs", "9:9": ""} {
		require.Equal(t, want, mountTypeOf(bufio.NewScanner(strings.NewReader(mountinfo)), dev), dev)
	}
}

// TestMagicNumbers pins the statfs magic numbers against include/uapi/linux/magic.h, so a
// typo in a constant fails here rather than misreporting a filesystem.
func TestMagicNumbers(t *testing.T) {
	for magic, want := range map[uint32]string{
		0x6969: "nfs", 0xff534d42: "cifs", 0xfe534d42: "smb2", 0x517b: "smb", 0x65735546: "fuse",
		0x01021997: "9p", 0x5346414f: "afs", 0x6b414653: "afs", 0x00c36400: "ceph",
	} {
		require.Equal(t, want, fsKinds[magic].name, "%#x", magic)
		require.True(t, fsKinds[magic].network, "%#x", magic)
	}
	for magic, want := range map[uint32]string{0xef53: "ext4", 0x01021994: "tmpfs", 0x794c7630: "overlay", 0x58465342: "xfs", 0x9123683e: "btrfs"} {
		require.Equal(t, want, fsKinds[magic].name, "%#x", magic)
		require.False(t, fsKinds[magic].network, "%#x", magic)
	}
}
