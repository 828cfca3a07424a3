//! Who holds a network namespace alive: finding one by its identity when its path is gone.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The mount points of the network namespace whose inode is `inode`, from `mountinfo` (the
/// contents of a `/proc/PID/mountinfo`): the lines whose file system is `nsfs` and whose root
/// is `net:[INODE]`. Lines that do not parse are skipped.
///
/// Bytes rather than text: a mount point may be any bytes but the four the kernel escapes.
pub fn netns_mount_points(mountinfo: &[u8], inode: u64) -> Vec<PathBuf> {
    let root = format!("net:[{inode}]");
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            // ID, parent ID, major:minor, root, mount point, options, optional fields, "-",
            // file system type, source, super block options.
            let mut fields = line.split(|&b| b == b' ');
            let line_root = fields.nth(3)?;
            let mount_point = fields.next()?;
            let fstype = fields.skip(1).skip_while(|f| *f != b"-").nth(1)?;
            (fstype == b"nsfs" && line_root == root.as_bytes()).then(|| unescape(mount_point))
        })
        .collect()
}

/// Decodes the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`); anything
/// else is taken as it is.
fn unescape(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(&[a, b, c]) = field.get(i + 1..i + 4)
            && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d))
            && let Ok(byte) = u8::try_from(u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0'))
        {
            out.push(byte);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// A path that opens the network namespace whose inode is `inode`, if any mount in this
/// process's mount namespace or any process still holds it (see below).
/// Mounts come first: a process may leave its namespace at any moment.
///
/// Every candidate is checked with `stat`; entries that cannot be read (a process that ended,
/// one this process may not inspect) are skipped.
///
/// Who holds a network namespace alive: finding one by its identity when its path is gone.
///
/// A namespace lives as long as something refers to it: a bind mount of its nsfs file (what
/// `ip netns add` makes at `/var/run/netns/NAME`, and what a runtime or an operator can make
/// anywhere else), a process in it, or an open descriptor. After a crash, the path recorded at
/// attach may be unmounted while the namespace lives on through another holder, or may name
/// another namespace altogether (a new pod's, under a reused name). A namespace's identity is
/// the inode of its nsfs file ([`Netns::inode`](crate::Netns::inode)); [`find_netns`] turns one
/// back into a path that opens it: a mount point in `/proc/self/mountinfo`, else
/// `/proc/PID/ns/net` of a process in it.
///
/// What it cannot see: mounts in other mount namespaces (the host's, when this process runs in
/// a container the host's mounts do not propagate to), a namespace only a thread other than a
/// process's main thread is in, or one held only by an open descriptor.
///
/// An inode names a namespace only while it lives: the kernel may give a dead namespace's
/// number to the next one created. Whoever finds an interface through it still checks the
/// interface's own identity ([`RestoreRecord::identifies`](crate::RestoreRecord)).
pub fn find_netns(inode: u64) -> Option<PathBuf> {
    // Every nsfs file lives on the one nsfs super block: same device as our own namespace.
    let nsfs = std::fs::metadata("/proc/self/ns/net").ok()?.dev();
    let is_it = |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.ino() == inode && m.dev() == nsfs);
    if let Ok(mountinfo) = std::fs::read("/proc/self/mountinfo")
        && let Some(mount) = netns_mount_points(&mountinfo, inode).into_iter().find(|p| is_it(p))
    {
        return Some(mount);
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            !name.is_empty() && name.as_encoded_bytes().iter().all(u8::is_ascii_digit)
        })
        .map(|entry| entry.path().join("ns/net"))
        .find(|path| is_it(path))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Real lines (from `ip netns add`, a bind mount onto a path with a space, systemd's
    /// mounts), one per kind of line to tell apart.
    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=402980k,mode=755
43 25 0:4 net:[4026532177] /run/netns/cni-1234 rw shared:2 - nsfs nsfs rw
44 22 0:4 net:[4026532177] /tmp/hold\\040of\\040cni\\134x rw - nsfs nsfs rw
45 22 0:4 mnt:[4026532177] /run/mntns/other rw shared:3 - nsfs nsfs rw
46 22 0:4 net:[4026532999] /run/netns/another rw shared:2 master:7 - nsfs nsfs rw
47 22 0:50 net:[4026532177] /not/nsfs rw - tmpfs tmpfs rw
";

    #[test]
    fn only_nsfs_mounts_of_that_network_namespace_are_found() {
        assert_eq!(
            netns_mount_points(MOUNTINFO.as_bytes(), 4_026_532_177),
            [
                PathBuf::from("/run/netns/cni-1234"),
                PathBuf::from("/tmp/hold of cni\\x")
            ]
        );
        // The optional fields (`shared:2 master:7`) do not hide the file system type.
        assert_eq!(
            netns_mount_points(MOUNTINFO.as_bytes(), 4_026_532_999),
            [PathBuf::from("/run/netns/another")]
        );
        assert!(netns_mount_points(MOUNTINFO.as_bytes(), 1).is_empty());
    }

    #[test]
    fn escapes_decode_and_what_is_not_one_stays() {
        assert_eq!(unescape(br"/a\040b\011c\012d"), PathBuf::from("/a b\tc\nd"));
        // Not three octal digits, or too big for a byte: literal.
        assert_eq!(unescape(br"/a\04"), PathBuf::from(r"/a\04"));
        assert_eq!(unescape(br"/a\089"), PathBuf::from(r"/a\089"));
        assert_eq!(unescape(br"/a\777"), PathBuf::from(r"/a\777"));
        assert_eq!(unescape(br"\"), PathBuf::from(r"\"));
    }

    #[test]
    fn truncated_lines_are_skipped() {
        for line in [
            "43 25 0:4 net:[5] /run/netns/x rw shared:2 -",
            "43 25 0:4 net:[5] /run/netns/x rw shared:2 nsfs",
            "43 25 0:4 net:[5]",
            "",
        ] {
            assert!(netns_mount_points(line.as_bytes(), 5).is_empty(), "{line}");
        }
    }

    #[test]
    fn our_own_namespace_is_found_through_a_process() {
        let own = crate::Netns::current().expect("own namespace").inode().expect("inode");
        let found = find_netns(own).expect("this process is in it");
        assert_eq!(
            std::fs::metadata(&found).expect("stat").ino(),
            own,
            "{}",
            found.display()
        );
        // No namespace has inode 1 (the root of a file system, never an nsfs file).
        assert_eq!(find_netns(1), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(text in proptest::collection::vec(any::<u8>(), 0..512), inode in any::<u64>()) {
            let _ = netns_mount_points(&text, inode);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[0-9a-z:\\[\\] \\\\/\\n-]{0,256}", inode in 0u64..10) {
            let _ = netns_mount_points(text.as_bytes(), inode);
        }

        #[test]
        fn any_mount_point_round_trips_through_the_kernels_escaping(
            path in proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..64),
            inode in any::<u64>(),
        ) {
            let mut escaped = Vec::new();
            for &b in &path {
                match b {
                    b' ' | b'\t' | b'\n' | b'\\' => escaped.extend_from_slice(format!("\\{b:03o}").as_bytes()),
                    _ => escaped.push(b),
                }
            }
            let mut line = format!("43 25 0:4 net:[{inode}] ").into_bytes();
            line.extend_from_slice(&escaped);
            line.extend_from_slice(b" rw shared:2 - nsfs nsfs rw\n");
            prop_assert_eq!(netns_mount_points(&line, inode), [PathBuf::from(OsString::from_vec(path))]);
        }
    }
}
