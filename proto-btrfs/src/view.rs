//! Typed views of btrfs commands, and their encoder.
//!
//! A view borrows from the decoded command. Required attributes are those
//! btrfs-progs 6.2 requires (a missing one is an error naming it); optional
//! ones the kernel sometimes sends (`otime`, the `rdev`/`mode` of a FIFO or
//! socket, `compression`/`encryption`) are `Option`s. When an attribute
//! appears twice the last one wins, as in btrfs-progs. Encoding a view writes
//! the attributes in the order the kernel does, so decoding and re-encoding a
//! kernel stream gives back the same bytes.

use proto_tlv::{AttrValue, Command, Error, Profile, Timespec, Value};

use crate::{AttrType as A, CommandType as C};

/// A btrfs command with its attributes decoded. Fields are named after
/// the attributes they come from (see [`crate::AttrType`]); paths are raw bytes
/// relative to the subvolume.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BtrfsCommand<'a> {
    /// `subvol`: start of a full send.
    Subvol {
        path: &'a [u8],
        uuid: [u8; 16],
        ctransid: u64,
    },
    /// `snapshot`: start of an incremental send.
    Snapshot {
        path: &'a [u8],
        uuid: [u8; 16],
        ctransid: u64,
        clone_uuid: [u8; 16],
        clone_ctransid: u64,
    },
    /// `mkfile`.
    Mkfile { path: &'a [u8], ino: u64 },
    /// `mkdir`.
    Mkdir { path: &'a [u8], ino: u64 },
    /// `mknod`.
    Mknod {
        path: &'a [u8],
        ino: u64,
        rdev: u64,
        mode: u64,
    },
    /// `mkfifo` (the kernel also sends `rdev` and `mode`).
    Mkfifo {
        path: &'a [u8],
        ino: u64,
        rdev: Option<u64>,
        mode: Option<u64>,
    },
    /// `mksock` (the kernel also sends `rdev` and `mode`).
    Mksock {
        path: &'a [u8],
        ino: u64,
        rdev: Option<u64>,
        mode: Option<u64>,
    },
    /// `symlink`.
    Symlink {
        path: &'a [u8],
        ino: u64,
        link: &'a [u8],
    },
    /// `rename`.
    Rename { path: &'a [u8], to: &'a [u8] },
    /// `link`.
    Link { path: &'a [u8], link: &'a [u8] },
    /// `unlink`.
    Unlink { path: &'a [u8] },
    /// `rmdir`.
    Rmdir { path: &'a [u8] },
    /// `set_xattr`.
    SetXattr {
        path: &'a [u8],
        name: &'a [u8],
        data: &'a [u8],
    },
    /// `remove_xattr`.
    RemoveXattr { path: &'a [u8], name: &'a [u8] },
    /// `write`.
    Write {
        path: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    /// `clone`.
    Clone {
        path: &'a [u8],
        offset: u64,
        len: u64,
        clone_uuid: [u8; 16],
        clone_ctransid: u64,
        clone_path: &'a [u8],
        clone_offset: u64,
    },
    /// `truncate`.
    Truncate { path: &'a [u8], size: u64 },
    /// `chmod`.
    Chmod { path: &'a [u8], mode: u64 },
    /// `chown`.
    Chown { path: &'a [u8], uid: u64, gid: u64 },
    /// `utimes`.
    Utimes {
        path: &'a [u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
        otime: Option<Timespec>,
    },
    /// `end`.
    End,
    /// `update_extent` (`--no-data` streams).
    UpdateExtent {
        path: &'a [u8],
        offset: u64,
        size: u64,
    },
    /// `fallocate` (v2).
    Fallocate {
        path: &'a [u8],
        mode: u32,
        offset: u64,
        size: u64,
    },
    /// `fileattr` (v2).
    Fileattr { path: &'a [u8], attr: u64 },
    /// `encoded_write` (v2).
    EncodedWrite {
        path: &'a [u8],
        offset: u64,
        unencoded_file_len: u64,
        unencoded_len: u64,
        unencoded_offset: u64,
        compression: Option<u32>,
        encryption: Option<u32>,
        data: &'a [u8],
    },
    /// `enable_verity` (v3).
    EnableVerity {
        path: &'a [u8],
        algorithm: u8,
        block_size: u32,
        salt: &'a [u8],
        sig: &'a [u8],
    },
    /// A command type this crate does not know, with its payload as is (it
    /// re-encodes byte for byte).
    Unknown { cmd: u16, payload: &'a [u8] },
}

/// Attributes of one command, looked up by type (last occurrence wins).
/// Kernel commands carry at most 8 attributes (`encoded_write`): their
/// types and values are kept in two small arrays (no per-attribute error
/// context: an attribute is found again by its rank only to report an
/// error), and a command with more falls back to scanning the payload.
struct Table<'a, 'c> {
    cmd: &'c Command<'a>,
    tys: [u16; TABLE_LEN],
    values: [&'a [u8]; TABLE_LEN],
    /// How many of `tys` and `values` are filled.
    n: usize,
    overflow: bool,
    /// Optional attributes that btrfs-progs never reads (the `rdev`/`mode`
    /// of a FIFO or socket, `otime`) become `None` when malformed, instead
    /// of an error: how `btrfs receive` sees them.
    lenient: bool,
}

const TABLE_LEN: usize = 8;

/// An attribute found in a [`Table`]: its value, and its rank among the
/// command's attributes (to find it again for an error).
#[derive(Clone, Copy)]
struct Found<'a> {
    value: &'a [u8],
    rank: usize,
}

/// A fixed-size attribute value: read straight from its bytes, or, when
/// they have the wrong size, the error of the matching [`proto_tlv::Attr`]
/// accessor.
trait Fixed<'a>: Sized {
    fn fast(v: &'a [u8]) -> Option<Self>;
    fn slow(a: &proto_tlv::Attr<'a>) -> Result<Self, Error>;
}

macro_rules! fixed_int {
    ($($t:ty => $as:ident),*) => {$(
        impl<'a> Fixed<'a> for $t {
            #[inline(always)]
            fn fast(v: &'a [u8]) -> Option<Self> {
                v.try_into().ok().map(<$t>::from_le_bytes)
            }
            fn slow(a: &proto_tlv::Attr<'a>) -> Result<Self, Error> {
                a.$as()
            }
        }
    )*};
}
fixed_int!(u8 => as_u8, u32 => as_u32, u64 => as_u64);

impl<'a> Fixed<'a> for [u8; 16] {
    #[inline(always)]
    fn fast(v: &'a [u8]) -> Option<Self> {
        v.try_into().ok()
    }
    fn slow(a: &proto_tlv::Attr<'a>) -> Result<Self, Error> {
        a.as_uuid()
    }
}

impl<'a> Fixed<'a> for Timespec {
    #[inline(always)]
    fn fast(v: &'a [u8]) -> Option<Self> {
        let v: &[u8; 12] = v.try_into().ok()?;
        let (sec, nsec) = v.split_at(8);
        Some(Timespec {
            sec: u64::from_le_bytes(sec.try_into().ok()?),
            nsec: u32::from_le_bytes(nsec.try_into().ok()?),
        })
    }
    fn slow(a: &proto_tlv::Attr<'a>) -> Result<Self, Error> {
        a.as_timespec()
    }
}

impl<'a, 'c> Table<'a, 'c> {
    #[inline(always)]
    fn new(cmd: &'c Command<'a>, lenient: bool) -> Self {
        let mut t = Table {
            cmd,
            tys: [0; TABLE_LEN],
            values: [&[]; TABLE_LEN],
            n: 0,
            overflow: false,
            lenient,
        };
        // Filled in place: a table built aside and then moved costs a
        // copy (and a stalled load) per command.
        for a in cmd.attrs() {
            if t.n < TABLE_LEN {
                t.tys[t.n] = a.ty();
                t.values[t.n] = a.value();
                t.n += 1;
            } else {
                t.overflow = true;
            }
        }
        t
    }
    #[inline(always)]
    fn get(&self, t: A) -> Option<Found<'a>> {
        if self.overflow {
            return self
                .cmd
                .attrs()
                .enumerate()
                .filter(|(_, a)| a.ty() == t.0)
                .last()
                .map(|(rank, a)| Found {
                    value: a.value(),
                    rank,
                });
        }
        let rank = self.tys[..self.n].iter().rposition(|&ty| ty == t.0)?;
        Some(Found {
            value: self.values[rank],
            rank,
        })
    }
    fn missing(&self, t: A) -> Error {
        proto_tlv::ErrorKind::MissingAttr {
            cmd: self.cmd.cmd(),
            attr_type: t.0,
        }
        .at(self.cmd.index(), self.cmd.offset())
    }
    #[inline]
    fn found(&self, t: A) -> Result<Found<'a>, Error> {
        self.get(t).ok_or_else(|| self.missing(t))
    }
    /// The value of `f` as a `T`, or the error its wrong size makes.
    #[inline]
    fn value<T: Fixed<'a>>(&self, t: A, f: Found<'a>) -> Result<T, Error> {
        match T::fast(f.value) {
            Some(v) => Ok(v),
            None => match self.cmd.attrs().nth(f.rank) {
                Some(a) => T::slow(&a),
                None => Err(self.missing(t)),
            },
        }
    }
    /// A required fixed-size attribute.
    #[inline]
    fn req<T: Fixed<'a>>(&self, t: A) -> Result<T, Error> {
        self.value(t, self.found(t)?)
    }
    /// A required attribute's bytes (paths, names, data).
    #[inline]
    fn bytes(&self, t: A) -> Result<&'a [u8], Error> {
        Ok(self.found(t)?.value)
    }
    /// An optional fixed-size attribute.
    #[inline]
    fn opt<T: Fixed<'a>>(&self, t: A) -> Result<Option<T>, Error> {
        self.get(t).map(|f| self.value(t, f)).transpose()
    }
    /// An optional attribute btrfs-progs does not read (see `lenient`).
    #[inline]
    fn unread<T: Fixed<'a>>(&self, t: A) -> Result<Option<T>, Error> {
        match self.opt(t) {
            Err(_) if self.lenient => Ok(None),
            r => r,
        }
    }
}

impl<'a> BtrfsCommand<'a> {
    /// Decodes the attributes of `cmd` into a typed view. Every attribute
    /// it keeps must have its type's size; a missing required one is an
    /// error naming it.
    #[inline]
    pub fn parse(cmd: &Command<'a>) -> Result<Self, Error> {
        Self::parse_with(cmd, false)
    }

    /// As `btrfs receive` reads a command: like [`BtrfsCommand::parse`],
    /// but optional attributes it never looks at are dropped when malformed.
    #[inline]
    pub(crate) fn parse_as_progs(cmd: &Command<'a>) -> Result<Self, Error> {
        Self::parse_with(cmd, true)
    }

    // Inlined where it is called, a caller that uses a few fields of the
    // view pays only for the checks and those fields.
    #[inline(always)]
    fn parse_with(cmd: &Command<'a>, lenient: bool) -> Result<Self, Error> {
        let t = Table::new(cmd, lenient);
        let path = || t.bytes(A::PATH);
        Ok(match C(cmd.cmd()) {
            C::SUBVOL => Self::Subvol {
                path: path()?,
                uuid: t.req(A::UUID)?,
                ctransid: t.req(A::CTRANSID)?,
            },
            C::SNAPSHOT => Self::Snapshot {
                path: path()?,
                uuid: t.req(A::UUID)?,
                ctransid: t.req(A::CTRANSID)?,
                clone_uuid: t.req(A::CLONE_UUID)?,
                clone_ctransid: t.req(A::CLONE_CTRANSID)?,
            },
            C::MKFILE => Self::Mkfile {
                path: path()?,
                ino: t.req(A::INO)?,
            },
            C::MKDIR => Self::Mkdir {
                path: path()?,
                ino: t.req(A::INO)?,
            },
            C::MKNOD => Self::Mknod {
                path: path()?,
                ino: t.req(A::INO)?,
                rdev: t.req(A::RDEV)?,
                mode: t.req(A::MODE)?,
            },
            C::MKFIFO => Self::Mkfifo {
                path: path()?,
                ino: t.req(A::INO)?,
                rdev: t.unread(A::RDEV)?,
                mode: t.unread(A::MODE)?,
            },
            C::MKSOCK => Self::Mksock {
                path: path()?,
                ino: t.req(A::INO)?,
                rdev: t.unread(A::RDEV)?,
                mode: t.unread(A::MODE)?,
            },
            C::SYMLINK => Self::Symlink {
                path: path()?,
                ino: t.req(A::INO)?,
                link: t.bytes(A::PATH_LINK)?,
            },
            C::RENAME => Self::Rename {
                path: path()?,
                to: t.bytes(A::PATH_TO)?,
            },
            C::LINK => Self::Link {
                path: path()?,
                link: t.bytes(A::PATH_LINK)?,
            },
            C::UNLINK => Self::Unlink { path: path()? },
            C::RMDIR => Self::Rmdir { path: path()? },
            C::SET_XATTR => Self::SetXattr {
                path: path()?,
                name: t.bytes(A::XATTR_NAME)?,
                data: t.bytes(A::XATTR_DATA)?,
            },
            C::REMOVE_XATTR => Self::RemoveXattr {
                path: path()?,
                name: t.bytes(A::XATTR_NAME)?,
            },
            C::WRITE => Self::Write {
                path: path()?,
                offset: t.req(A::FILE_OFFSET)?,
                data: t.bytes(A::DATA)?,
            },
            C::CLONE => Self::Clone {
                path: path()?,
                offset: t.req(A::FILE_OFFSET)?,
                len: t.req(A::CLONE_LEN)?,
                clone_uuid: t.req(A::CLONE_UUID)?,
                clone_ctransid: t.req(A::CLONE_CTRANSID)?,
                clone_path: t.bytes(A::CLONE_PATH)?,
                clone_offset: t.req(A::CLONE_OFFSET)?,
            },
            C::TRUNCATE => Self::Truncate {
                path: path()?,
                size: t.req(A::SIZE)?,
            },
            C::CHMOD => Self::Chmod {
                path: path()?,
                mode: t.req(A::MODE)?,
            },
            C::CHOWN => Self::Chown {
                path: path()?,
                uid: t.req(A::UID)?,
                gid: t.req(A::GID)?,
            },
            C::UTIMES => Self::Utimes {
                path: path()?,
                atime: t.req(A::ATIME)?,
                mtime: t.req(A::MTIME)?,
                ctime: t.req(A::CTIME)?,
                otime: t.unread(A::OTIME)?,
            },
            C::END => Self::End,
            C::UPDATE_EXTENT => Self::UpdateExtent {
                path: path()?,
                offset: t.req(A::FILE_OFFSET)?,
                size: t.req(A::SIZE)?,
            },
            C::FALLOCATE => Self::Fallocate {
                path: path()?,
                mode: t.req(A::FALLOCATE_MODE)?,
                offset: t.req(A::FILE_OFFSET)?,
                size: t.req(A::SIZE)?,
            },
            C::FILEATTR => Self::Fileattr {
                path: path()?,
                attr: t.req(A::FILEATTR)?,
            },
            C::ENCODED_WRITE => Self::EncodedWrite {
                path: path()?,
                offset: t.req(A::FILE_OFFSET)?,
                unencoded_file_len: t.req(A::UNENCODED_FILE_LEN)?,
                unencoded_len: t.req(A::UNENCODED_LEN)?,
                unencoded_offset: t.req(A::UNENCODED_OFFSET)?,
                compression: t.opt(A::COMPRESSION)?,
                encryption: t.opt(A::ENCRYPTION)?,
                data: t.bytes(A::DATA)?,
            },
            C::ENABLE_VERITY => Self::EnableVerity {
                path: path()?,
                algorithm: t.req(A::VERITY_ALGORITHM)?,
                block_size: t.req(A::VERITY_BLOCK_SIZE)?,
                salt: t.bytes(A::VERITY_SALT_DATA)?,
                sig: t.bytes(A::VERITY_SIG_DATA)?,
            },
            other => Self::Unknown {
                cmd: other.0,
                payload: cmd.payload(),
            },
        })
    }

    /// The command type.
    pub fn command_type(&self) -> C {
        match self {
            Self::Subvol { .. } => C::SUBVOL,
            Self::Snapshot { .. } => C::SNAPSHOT,
            Self::Mkfile { .. } => C::MKFILE,
            Self::Mkdir { .. } => C::MKDIR,
            Self::Mknod { .. } => C::MKNOD,
            Self::Mkfifo { .. } => C::MKFIFO,
            Self::Mksock { .. } => C::MKSOCK,
            Self::Symlink { .. } => C::SYMLINK,
            Self::Rename { .. } => C::RENAME,
            Self::Link { .. } => C::LINK,
            Self::Unlink { .. } => C::UNLINK,
            Self::Rmdir { .. } => C::RMDIR,
            Self::SetXattr { .. } => C::SET_XATTR,
            Self::RemoveXattr { .. } => C::REMOVE_XATTR,
            Self::Write { .. } => C::WRITE,
            Self::Clone { .. } => C::CLONE,
            Self::Truncate { .. } => C::TRUNCATE,
            Self::Chmod { .. } => C::CHMOD,
            Self::Chown { .. } => C::CHOWN,
            Self::Utimes { .. } => C::UTIMES,
            Self::End => C::END,
            Self::UpdateExtent { .. } => C::UPDATE_EXTENT,
            Self::Fallocate { .. } => C::FALLOCATE,
            Self::Fileattr { .. } => C::FILEATTR,
            Self::EncodedWrite { .. } => C::ENCODED_WRITE,
            Self::EnableVerity { .. } => C::ENABLE_VERITY,
            Self::Unknown { cmd, .. } => C(*cmd),
        }
    }

    /// The attributes in the kernel's order, ready for the TLV encoder.
    /// `Unknown` gives none: its payload is kept whole instead.
    pub fn attr_values(&self) -> Vec<AttrValue<'a>> {
        use Value::{Bytes, Timespec as Ts, Uuid, U32, U64, U8};
        let v = |t: A, x: Value<'a>| AttrValue::new(t.0, x);
        let mut out = Vec::with_capacity(8);
        match *self {
            Self::Subvol {
                path,
                uuid,
                ctransid,
            } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::UUID, Uuid(uuid)),
                v(A::CTRANSID, U64(ctransid)),
            ]),
            Self::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::UUID, Uuid(uuid)),
                v(A::CTRANSID, U64(ctransid)),
                v(A::CLONE_UUID, Uuid(clone_uuid)),
                v(A::CLONE_CTRANSID, U64(clone_ctransid)),
            ]),
            Self::Mkfile { path, ino } | Self::Mkdir { path, ino } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::INO, U64(ino))])
            }
            Self::Mknod {
                path,
                ino,
                rdev,
                mode,
            } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::INO, U64(ino)),
                v(A::RDEV, U64(rdev)),
                v(A::MODE, U64(mode)),
            ]),
            Self::Mkfifo {
                path,
                ino,
                rdev,
                mode,
            }
            | Self::Mksock {
                path,
                ino,
                rdev,
                mode,
            } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::INO, U64(ino))]);
                out.extend(rdev.map(|r| v(A::RDEV, U64(r))));
                out.extend(mode.map(|m| v(A::MODE, U64(m))));
            }
            Self::Symlink { path, ino, link } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::INO, U64(ino)),
                v(A::PATH_LINK, Bytes(link)),
            ]),
            Self::Rename { path, to } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::PATH_TO, Bytes(to))])
            }
            Self::Link { path, link } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::PATH_LINK, Bytes(link))])
            }
            Self::Unlink { path } | Self::Rmdir { path } => out.push(v(A::PATH, Bytes(path))),
            Self::SetXattr { path, name, data } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::XATTR_NAME, Bytes(name)),
                v(A::XATTR_DATA, Bytes(data)),
            ]),
            Self::RemoveXattr { path, name } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::XATTR_NAME, Bytes(name))])
            }
            Self::Write { path, offset, data } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::FILE_OFFSET, U64(offset)),
                v(A::DATA, Bytes(data)),
            ]),
            Self::Clone {
                path,
                offset,
                len,
                clone_uuid,
                clone_ctransid,
                clone_path,
                clone_offset,
            } => out.extend([
                v(A::FILE_OFFSET, U64(offset)),
                v(A::CLONE_LEN, U64(len)),
                v(A::PATH, Bytes(path)),
                v(A::CLONE_UUID, Uuid(clone_uuid)),
                v(A::CLONE_CTRANSID, U64(clone_ctransid)),
                v(A::CLONE_PATH, Bytes(clone_path)),
                v(A::CLONE_OFFSET, U64(clone_offset)),
            ]),
            Self::Truncate { path, size } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::SIZE, U64(size))])
            }
            Self::Chmod { path, mode } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::MODE, U64(mode))])
            }
            Self::Chown { path, uid, gid } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::UID, U64(uid)),
                v(A::GID, U64(gid)),
            ]),
            Self::Utimes {
                path,
                atime,
                mtime,
                ctime,
                otime,
            } => {
                out.extend([
                    v(A::PATH, Bytes(path)),
                    v(A::ATIME, Ts(atime)),
                    v(A::MTIME, Ts(mtime)),
                    v(A::CTIME, Ts(ctime)),
                ]);
                out.extend(otime.map(|o| v(A::OTIME, Ts(o))));
            }
            Self::End | Self::Unknown { .. } => {}
            Self::UpdateExtent { path, offset, size } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::FILE_OFFSET, U64(offset)),
                v(A::SIZE, U64(size)),
            ]),
            Self::Fallocate {
                path,
                mode,
                offset,
                size,
            } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::FALLOCATE_MODE, U32(mode)),
                v(A::FILE_OFFSET, U64(offset)),
                v(A::SIZE, U64(size)),
            ]),
            Self::Fileattr { path, attr } => {
                out.extend([v(A::PATH, Bytes(path)), v(A::FILEATTR, U64(attr))])
            }
            Self::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => {
                out.extend([
                    v(A::PATH, Bytes(path)),
                    v(A::FILE_OFFSET, U64(offset)),
                    v(A::UNENCODED_FILE_LEN, U64(unencoded_file_len)),
                    v(A::UNENCODED_LEN, U64(unencoded_len)),
                    v(A::UNENCODED_OFFSET, U64(unencoded_offset)),
                ]);
                out.extend(compression.map(|c| v(A::COMPRESSION, U32(c))));
                out.extend(encryption.map(|e| v(A::ENCRYPTION, U32(e))));
                out.push(v(A::DATA, Bytes(data)));
            }
            Self::EnableVerity {
                path,
                algorithm,
                block_size,
                salt,
                sig,
            } => out.extend([
                v(A::PATH, Bytes(path)),
                v(A::VERITY_ALGORITHM, U8(algorithm)),
                v(A::VERITY_BLOCK_SIZE, U32(block_size)),
                v(A::VERITY_SALT_DATA, Bytes(salt)),
                v(A::VERITY_SIG_DATA, Bytes(sig)),
            ]),
        }
        out
    }

    /// Appends the encoded command to `out` under `profile` (see
    /// [`crate::profile`]). Returns the bytes written.
    pub fn encode(&self, profile: &Profile, out: &mut Vec<u8>) -> Result<usize, Error> {
        match self {
            Self::Unknown { cmd, payload } => proto_tlv::encode_raw(profile, *cmd, payload, out),
            _ => {
                proto_tlv::encode_command(profile, self.command_type().0, &self.attr_values(), out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_tlv::{decode_command, encode_command};

    #[test]
    fn unknown_commands_keep_their_payload() {
        let p = crate::profile(2).unwrap();
        let mut v = Vec::new();
        let attrs = [
            AttrValue::new(99, Value::Bytes(b"opaque")),
            AttrValue::new(A::PATH.0, Value::Bytes(b"p")),
        ];
        encode_command(&p, 0x1234, &attrs, &mut v).unwrap();
        let (c, _) = decode_command(&v, &p, 0, 0).unwrap();
        let view = BtrfsCommand::parse(&c).unwrap();
        assert_eq!(view.command_type(), C(0x1234));
        let mut again = Vec::new();
        view.encode(&p, &mut again).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn optional_attributes_progs_ignores_are_lenient_only_for_the_dump() {
        let p = crate::profile(2).unwrap();
        let mut v = Vec::new();
        let attrs = [
            AttrValue::new(A::PATH.0, Value::Bytes(b"f")),
            AttrValue::new(A::INO.0, Value::U64(5)),
            AttrValue::new(A::MODE.0, Value::U32(0o644)),
        ];
        encode_command(&p, C::MKFIFO.0, &attrs, &mut v).unwrap();
        let (c, _) = decode_command(&v, &p, 0, 0).unwrap();
        let e = BtrfsCommand::parse(&c).unwrap_err();
        assert_eq!(
            e.kind,
            proto_tlv::ErrorKind::AttrSize {
                attr_type: A::MODE.0,
                expected: 8,
                actual: 4
            }
        );
        assert_eq!(
            BtrfsCommand::parse_as_progs(&c).unwrap(),
            BtrfsCommand::Mkfifo {
                path: b"f",
                ino: 5,
                rdev: None,
                mode: None
            }
        );
    }

    #[test]
    fn last_attribute_wins_even_past_the_small_table() {
        let p = crate::profile(2).unwrap();
        for extra in [0usize, 5, 20] {
            let mut attrs = vec![AttrValue::new(A::PATH.0, Value::Bytes(b"first"))];
            attrs.extend((0..extra).map(|_| AttrValue::new(A::SIZE.0, Value::U64(1))));
            attrs.push(AttrValue::new(A::SIZE.0, Value::U64(42)));
            attrs.push(AttrValue::new(A::PATH.0, Value::Bytes(b"last")));
            let mut v = Vec::new();
            encode_command(&p, C::TRUNCATE.0, &attrs, &mut v).unwrap();
            let (c, _) = decode_command(&v, &p, 0, 0).unwrap();
            assert_eq!(
                BtrfsCommand::parse(&c).unwrap(),
                BtrfsCommand::Truncate {
                    path: b"last",
                    size: 42
                },
                "{extra} extra attributes"
            );
        }
    }
}
