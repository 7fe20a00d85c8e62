package lock

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Filesystem magic numbers (statfs f_type), from include/uapi/linux/magic.h unless noted.
// Network and userspace filesystems first: on these a flock may be shared across hosts, or
// emulated, or not honoured, and a Unix socket file does not connect across hosts.
const (
	nfsMagic    = 0x6969     // NFS_SUPER_MAGIC: NFS v2/v3/v4 client; flock emulated by byte-range locks shared across hosts
	smbMagic    = 0x517b     // SMB_SUPER_MAGIC: the old smbfs client
	cifsMagic   = 0xff534d42 // CIFS_SUPER_MAGIC: CIFS/SMB client (cifs.ko)
	smb2Magic   = 0xfe534d42 // SMB2_SUPER_MAGIC: SMB2/3 client (smb3 mounts of cifs.ko)
	fuseMagic   = 0x65735546 // FUSE_SUPER_MAGIC: any FUSE filesystem, including virtiofs (told apart by mountinfo)
	v9fsMagic   = 0x01021997 // V9FS_MAGIC: 9p (WSL2 /mnt/c, QEMU virtfs, gVisor gofer)
	afsMagic    = 0x5346414f // AFS_SUPER_MAGIC: OpenAFS
	kafsMagic   = 0x6b414653 // AFS_FS_MAGIC: the kernel's kAFS client
	cephMagic   = 0x00c36400 // CEPH_SUPER_MAGIC: CephFS kernel client
	codaMagic   = 0x73757245 // CODA_SUPER_MAGIC: Coda
	ncpMagic    = 0x564c     // NCP_SUPER_MAGIC: NetWare
	ocfs2Magic  = 0x7461636f // OCFS2_SUPER_MAGIC: Oracle cluster filesystem; cluster-wide locks
	gfs2Magic   = 0x01161970 // GFS2_MAGIC: Red Hat cluster filesystem; cluster-wide locks
	lustreMagic = 0x0bd00bd0 // LL_SUPER_MAGIC: Lustre client (lustre/include/uapi/linux/lustre/lustre_user.h)
	gpfsMagic   = 0x47504653 // "GPFS": IBM Spectrum Scale (statfs(2) man page)
)

// Local filesystems, named so errors and logs say more than a number.
const (
	ext4Magic     = 0xef53     // EXT2/3/4_SUPER_MAGIC
	tmpfsMagic    = 0x01021994 // TMPFS_MAGIC: tmpfs (/run, /dev/shm, often /tmp)
	ramfsMagic    = 0x858458f6 // RAMFS_MAGIC
	overlayMagic  = 0x794c7630 // OVERLAYFS_SUPER_MAGIC: container root filesystems
	xfsMagic      = 0x58465342 // XFS_SUPER_MAGIC
	btrfsMagic    = 0x9123683e // BTRFS_SUPER_MAGIC
	zfsMagic      = 0x2fc12fc1 // ZFS on Linux (include/sys/fs/zfs.h ZFS_SUPER_MAGIC)
	f2fsMagic     = 0xf2f52010 // F2FS_SUPER_MAGIC
	bcachefsMagic = 0xca451a4e // BCACHEFS_SUPER_MAGIC
	squashfsMagic = 0x73717368 // SQUASHFS_MAGIC (read-only)
	msdosMagic    = 0x4d44     // MSDOS_SUPER_MAGIC: FAT
	exfatMagic    = 0x2011bab0 // EXFAT_SUPER_MAGIC
	ntfsMagic     = 0x5346544e // NTFS_SB_MAGIC (ntfs and ntfs3)
)

// fsKinds maps a magic number to a name and whether the filesystem is network or userspace.
var fsKinds = map[uint32]struct {
	name    string
	network bool
}{
	nfsMagic:    {"nfs", true},
	smbMagic:    {"smb", true},
	cifsMagic:   {"cifs", true},
	smb2Magic:   {"smb2", true},
	fuseMagic:   {"fuse", true},
	v9fsMagic:   {"9p", true},
	afsMagic:    {"afs", true},
	kafsMagic:   {"afs", true},
	cephMagic:   {"ceph", true},
	codaMagic:   {"coda", true},
	ncpMagic:    {"ncpfs", true},
	ocfs2Magic:  {"ocfs2", true},
	gfs2Magic:   {"gfs2", true},
	lustreMagic: {"lustre", true},
	gpfsMagic:   {"gpfs", true},

	ext4Magic:     {"ext4", false},
	tmpfsMagic:    {"tmpfs", false},
	ramfsMagic:    {"ramfs", false},
	overlayMagic:  {"overlay", false},
	xfsMagic:      {"xfs", false},
	btrfsMagic:    {"btrfs", false},
	zfsMagic:      {"zfs", false},
	f2fsMagic:     {"f2fs", false},
	bcachefsMagic: {"bcachefs", false},
	squashfsMagic: {"squashfs", false},
	msdosMagic:    {"vfat", false},
	exfatMagic:    {"exfat", false},
	ntfsMagic:     {"ntfs", false},
}

// FSKind reports the filesystem type of dir and whether it is a network or userspace
// filesystem on which the lock or the socket cannot be trusted to be host-local: NFS,
// CIFS/SMB/SMB2, FUSE (including virtiofs, Docker Desktop's file sharing), 9p, AFS, Ceph,
// Coda, NetWare and the cluster filesystems (OCFS2, GFS2, Lustre, GPFS). A FUSE mount is named
// by its mountinfo type ("virtiofs", "fuse.sshfs") when that can be read. An unknown type is
// named by its magic number in hex and reported as local. It calls statfs(2), which may block
// on an unresponsive network mount, and refuses nothing: the caller decides.
func FSKind(dir string) (name string, network bool, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", false, fmt.Errorf("lock: statfs %s: %w", dir, err)
	}
	magic := uint32(st.Type) // a 32-bit magic in a word-sized, sometimes signed, field
	k, ok := fsKinds[magic]
	if !ok {
		return fmt.Sprintf("%#x", magic), false, nil
	}
	if magic == fuseMagic {
		if t := mountType(dir); t != "" {
			k.name = t
		}
	}
	return k.name, k.network, nil
}

// mountType returns the filesystem type /proc/self/mountinfo gives for the mount holding
// dir, matched by device number, or "" when that cannot be found.
func mountType(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return ""
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev))) // Dev is 32 bits on some arches
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	return mountTypeOf(bufio.NewScanner(f), dev)
}

// mountTypeOf scans mountinfo lines for the first mount of device dev ("major:minor") and
// returns its type. Line format (proc(5)): id parent major:minor root mountpoint options
// [optional fields...] - fstype source superoptions.
func mountTypeOf(sc *bufio.Scanner, dev string) string {
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != dev {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				return fields[i+1]
			}
		}
	}
	return ""
}
