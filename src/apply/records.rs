//! What `apply` keeps beside the received trees, in `DIR/.proto-stream/`:
//! one record per received tree (`subvols/<UUID>`: its name and ctransid,
//! found by the UUID later streams name as their parent or clone source,
//! as `btrfs receive` finds a subvolume by its received UUID), the journal
//! (`apply.journal`) and a staging directory for snapshot copies.

use std::fs::File;
use std::io::{self, Read, Write};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{mkdirat, openat, renameat, AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// The directory of apply's own records in `DIR`.
pub const META_DIR: &str = ".proto-stream";
const SUBVOLS: &str = "subvols";
const STAGING: &str = "staging";
const HEADER: &str = "proto-stream received tree 1";

/// A received tree: its name in `DIR`, the UUID and ctransid the sender
/// gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Subvolume {
    pub(super) name: Vec<u8>,
    pub(super) uuid: [u8; 16],
    pub(super) ctransid: u64,
}

/// `DIR/.proto-stream/` and its `subvols/`.
#[derive(Debug)]
pub(super) struct Records {
    meta: OwnedFd,
    subvols: OwnedFd,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Opens directory `name` in `at` to be read, never through a symlink.
pub(super) fn open_dir(at: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn mkdir_open(at: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    match mkdirat(at, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_dir(at, name.as_bytes())
}

/// Writes `data` to `dir/name` in one step: a temporary file, fsync'd,
/// renamed over it.
pub(super) fn write_atomically(dir: BorrowedFd<'_>, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut f = File::from(fd);
    f.write_all(data)?;
    f.sync_data()?;
    renameat(dir, tmp.as_str(), dir, name)?;
    Ok(())
}

impl Records {
    /// Opens (making them when missing) `DIR/.proto-stream/` and its
    /// `subvols/`.
    pub(super) fn open(dir: BorrowedFd<'_>) -> io::Result<Records> {
        let meta = mkdir_open(dir, META_DIR)?;
        let subvols = mkdir_open(meta.as_fd(), SUBVOLS)?;
        Ok(Records { meta, subvols })
    }

    /// `DIR/.proto-stream/`.
    pub(super) fn meta(&self) -> BorrowedFd<'_> {
        self.meta.as_fd()
    }

    /// Where a snapshot is copied before it is renamed into place:
    /// `DIR/.proto-stream/` and the name to use in it.
    pub(super) fn staging(&self) -> io::Result<(BorrowedFd<'_>, &'static str)> {
        Ok((self.meta.as_fd(), STAGING))
    }

    /// The tree received with `uuid`, if any.
    pub(super) fn find(&self, uuid: &[u8; 16]) -> io::Result<Option<Subvolume>> {
        let name = proto_btrfs::uuid_text(uuid);
        let fd = match openat(
            &self.subvols,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        File::from(fd).take(64 * 1024).read_to_string(&mut text)?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{META_DIR}/{SUBVOLS}/{name} is not a record this version reads"),
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad());
        }
        let mut sub = Subvolume {
            name: Vec::new(),
            uuid: *uuid,
            ctransid: 0,
        };
        for line in lines {
            let (k, v) = line.split_once(' ').ok_or_else(bad)?;
            match k {
                "uuid" if v == name => {}
                "ctransid" => sub.ctransid = v.parse().map_err(|_| bad())?,
                "name" => sub.name = unhex(v).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
        // One component of DIR, as the stream's subvol command had to be.
        if super::ops::check_subvol_name(&sub.name).is_err() {
            return Err(bad());
        }
        Ok(Some(sub))
    }

    /// Records a received tree (replacing an older record of its UUID).
    pub(super) fn save(&self, sub: &Subvolume) -> io::Result<()> {
        let name = proto_btrfs::uuid_text(&sub.uuid);
        let text = format!(
            "{HEADER}\nuuid {name}\nctransid {}\nname {}\n",
            sub.ctransid,
            hex(&sub.name)
        );
        write_atomically(self.subvols.as_fd(), &name, text.as_bytes())
    }
}

/// Removes `name` in `dir` if it is there: a file, or a directory tree
/// (never following a symlink).
pub(super) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = open_dir(dir, name)?;
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(&fd)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(e.file_name().to_owned());
        }
    }
    for n in names {
        match rustix::fs::unlinkat(&fd, n.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) | Err(Errno::PERM) => remove_tree(fd.as_fd(), n.to_bytes())?,
            Err(e) => return Err(e.into()),
        }
    }
    drop(fd);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_and_hex() {
        let u = [
            0x09, 0xbf, 0x4b, 0x94, 0x8a, 0x8a, 0x0b, 0x45, 0xa6, 0xa4, 0xa7, 0xf1, 0x92, 0xb1,
            0x89, 0x6a,
        ];
        assert_eq!(
            proto_btrfs::uuid_text(&u),
            "09bf4b94-8a8a-0b45-a6a4-a7f192b1896a"
        );
        assert_eq!(unhex(&hex(b"a b\n\xff")).unwrap(), b"a b\n\xff");
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
