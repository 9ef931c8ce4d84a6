//! The `btrfs receive --dump` format of btrfs-progs 6.2, byte for byte.
//!
//! Each command prints as `title` padded to 16 columns, the full path
//! (escaped as btrfs-progs does), padding to column 32 (at least one space)
//! and the command's fields. Timestamps print as with `TZ=UTC`.
//!
//! Reproduced quirks of btrfs-progs 6.2: strings stop at the first NUL
//! byte; paths and link, symlink and rename destinations are escaped, while
//! xattr names and data and clone sources print raw; `fileattr=0x%llu`
//! prints a decimal number after `0x`; a `clone` length goes through an
//! `int` (so 2^32 + 5 prints 5 and 2^31 prints 18446744071562067968); a path
//! longer than `PATH_MAX` is an error; an attribute type of 0 or above 35 is
//! an error in any command; optional attributes btrfs-progs never reads
//! (`otime`, the `rdev` and `mode` of a FIFO or socket) are not checked.
//!
//! Known divergences, kept on purpose:
//! - unknown command types print nothing (as in btrfs-progs), but
//!   [`Dumper::dump`] reports them so that a caller can warn;
//! - versions: btrfs-progs 6.2 refuses v3 streams and reads a version-0
//!   header as v1; this crate dumps v3 (`enable_verity` in the format of
//!   later btrfs-progs) and refuses version 0.

use proto_tlv::{Command, Timespec};

use crate::{BtrfsCommand, Error};

/// btrfs-progs' `PATH_MAX`.
const PATH_MAX: usize = 4096;
/// The highest attribute type btrfs-progs 6.2 accepts (`BTRFS_SEND_A_MAX`).
const MAX_ATTR: u16 = 35;

/// Dump state: the current subvolume path, as btrfs-progs keeps it, and
/// buffers reused from one command to the next (nothing is allocated per
/// command).
#[derive(Clone, Debug)]
pub struct Dumper {
    full_subvol_path: Vec<u8>,
    /// What every path under the subvolume starts with when printed: the
    /// subvolume path (up to a NUL, one trailing `/` dropped) escaped, then
    /// `/`.
    prefix: Vec<u8>,
    /// A full path (rename, clone) or the times of a `utimes`.
    scratch: Vec<u8>,
}

impl Default for Dumper {
    fn default() -> Self {
        let mut d = Dumper {
            full_subvol_path: b".".to_vec(),
            prefix: Vec::new(),
            scratch: Vec::new(),
        };
        d.set_prefix();
        d
    }
}

/// The C string view of `b`: up to its first NUL byte.
#[inline]
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// btrfs-progs' `path_cat_out`: drop one trailing `/` from each part, join
/// them with `/`.
fn path_cat(p1: &[u8], p2: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let (p1, p2) = (cstr(p1), cstr(p2));
    if p1.len() + p2.len() + 2 >= PATH_MAX {
        return Err(format!(
            "path invalid: {} bytes joined to {} reach PATH_MAX",
            p2.len(),
            p1.len()
        ));
    }
    let p1 = p1.strip_suffix(b"/").unwrap_or(p1);
    let p2 = p2.strip_suffix(b"/").unwrap_or(p2);
    out.clear();
    out.extend_from_slice(p1);
    out.push(b'/');
    out.extend_from_slice(p2);
    Ok(())
}

/// Whether `c` prints as itself in an escaped path.
#[inline(always)]
fn plain(c: u8) -> bool {
    matches!(c, 0x21..=0x7e) && c != b'\\'
}

/// Writes `path` escaped as btrfs-progs' `print_path_escaped`; returns the
/// printed width.
fn write_escaped(out: &mut Vec<u8>, path: &[u8]) -> usize {
    let start = out.len();
    let mut rest = path;
    loop {
        // Runs of plain bytes go out in one copy.
        let n = rest.iter().position(|&c| !plain(c)).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..n]);
        let Some((&c, tail)) = rest[n..].split_first() else {
            break;
        };
        rest = tail;
        let esc = match c {
            // A C string: it stops at the first NUL.
            0 => break,
            0x07 => b'a',
            0x08 => b'b',
            0x1b => b'e',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x0b => b'v',
            b' ' => b' ',
            b'\\' => b'\\',
            _ => {
                out.extend_from_slice(&[
                    b'\\',
                    b'0' + (c >> 6),
                    b'0' + ((c >> 3) & 7),
                    b'0' + (c & 7),
                ]);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', esc]);
    }
    out.len() - start
}

/// Spaces to pad the columns with.
const SPACES: [u8; 32] = [b' '; 32];

/// Appends decimal digits.
#[inline]
fn num(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn octal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 22];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v & 7) as u8;
        v >>= 3;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn hex(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// A UUID in its usual text form, as the dump prints it
/// (`09bf4b94-8a8a-0b45-a6a4-a7f192b1896a`).
pub fn uuid_text(u: &[u8; 16]) -> String {
    let mut out = Vec::with_capacity(36);
    uuid(&mut out, u);
    String::from_utf8(out).unwrap_or_default()
}

fn uuid(out: &mut Vec<u8>, u: &[u8; 16]) {
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(b"0123456789abcdef"[usize::from(b >> 4)]);
        out.push(b"0123456789abcdef"[usize::from(b & 15)]);
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn two(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
}

/// `strftime("%FT%T%z")` of `localtime_r` under `TZ=UTC`, as glibc prints it:
/// the year unpadded (and computed in a wrapping `int`), `+0000` for the zone.
/// `None` where `localtime_r` fails (the year does not fit in an `int`).
fn timestamp(out: &mut Vec<u8>, ts: &Timespec) -> Option<()> {
    let secs = ts.sec_signed();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let tm_year = i32::try_from(year - 1900).ok()?;
    num(out, tm_year.wrapping_add(1900));
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    out.extend_from_slice(b"+0000");
    Some(())
}

impl Dumper {
    /// A dumper at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the dump line of `cmd` to `out`. Returns `Ok(false)` when
    /// nothing was printed: END, or a command type btrfs-progs does not know
    /// (which it skips silently; the caller may warn).
    pub fn dump(&mut self, cmd: &Command<'_>, out: &mut Vec<u8>) -> Result<bool, Error> {
        // btrfs-progs refuses these before looking at the command type.
        if let Some(a) = cmd.attrs().find(|a| a.ty() == 0 || a.ty() > MAX_ATTR) {
            return Err(Error::Dump {
                index: cmd.index(),
                offset: a.offset(),
                reason: format!(
                    "invalid attribute type {} (btrfs-progs reads 1..={MAX_ATTR})",
                    a.ty()
                ),
            });
        }
        let view = BtrfsCommand::parse_as_progs(cmd)?;
        let start = out.len();
        let r = self.line(&view, out);
        r.map_err(|reason| {
            out.truncate(start);
            Error::Dump {
                index: cmd.index(),
                offset: cmd.offset(),
                reason,
            }
        })
    }

    /// Caches the printed form of the subvolume path ([`Dumper::prefix`]).
    fn set_prefix(&mut self) {
        let p = cstr(&self.full_subvol_path);
        let p = p.strip_suffix(b"/").unwrap_or(p);
        self.prefix.clear();
        write_escaped(&mut self.prefix, p);
        self.prefix.push(b'/');
    }

    /// The title padded to 16 columns, then the full path escaped; returns
    /// the printed width of the path.
    fn head(
        &mut self,
        out: &mut Vec<u8>,
        title: &str,
        path: &[u8],
        subvol: bool,
    ) -> Result<usize, String> {
        out.extend_from_slice(title.as_bytes());
        out.extend_from_slice(&SPACES[..16usize.saturating_sub(title.len())]);
        if subvol {
            let mut full = std::mem::take(&mut self.scratch);
            path_cat(b".", path, &mut full).map_err(|e| format!("{title}: {e}"))?;
            self.full_subvol_path.clone_from(&full);
            self.scratch = full;
            self.set_prefix();
            return Ok(write_escaped(out, &self.full_subvol_path));
        }
        // path_cat(full_subvol_path, path), printed escaped: the subvolume
        // part is printed once and for all in `prefix`.
        let p = cstr(path);
        // (full_subvol_path holds no NUL: path_cat made it.)
        if self.full_subvol_path.len() + p.len() + 2 >= PATH_MAX {
            let mut v = Vec::new();
            path_cat(&self.full_subvol_path, path, &mut v).map_err(|e| format!("{title}: {e}"))?;
        }
        out.extend_from_slice(&self.prefix);
        Ok(self.prefix.len() + write_escaped(out, p.strip_suffix(b"/").unwrap_or(p)))
    }

    fn head_args(
        &mut self,
        out: &mut Vec<u8>,
        title: &str,
        path: &[u8],
        subvol: bool,
    ) -> Result<(), String> {
        let w = self.head(out, title, path, subvol)?;
        // At least one space, up to column 32.
        out.extend_from_slice(&SPACES[..32usize.saturating_sub(w).max(1)]);
        Ok(())
    }

    /// The full path of `p` into `scratch`.
    fn full(&mut self, p: &[u8]) -> Result<(), String> {
        path_cat(&self.full_subvol_path, p, &mut self.scratch)
    }

    fn line(&mut self, view: &BtrfsCommand<'_>, o: &mut Vec<u8>) -> Result<bool, String> {
        use BtrfsCommand as B;
        match *view {
            B::Subvol {
                path,
                uuid: u,
                ctransid,
            } => {
                self.head_args(o, "subvol", path, true)?;
                o.extend_from_slice(b"uuid=");
                uuid(o, &u);
                o.extend_from_slice(b" transid=");
                num(o, ctransid);
            }
            B::Snapshot {
                path,
                uuid: u,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => {
                self.head_args(o, "snapshot", path, true)?;
                o.extend_from_slice(b"uuid=");
                uuid(o, &u);
                o.extend_from_slice(b" transid=");
                num(o, ctransid);
                o.extend_from_slice(b" parent_uuid=");
                uuid(o, &clone_uuid);
                o.extend_from_slice(b" parent_transid=");
                num(o, clone_ctransid);
            }
            B::Mkfile { path, .. } => {
                self.head(o, "mkfile", path, false)?;
            }
            B::Mkdir { path, .. } => {
                self.head(o, "mkdir", path, false)?;
            }
            B::Mknod {
                path, rdev, mode, ..
            } => {
                self.head_args(o, "mknod", path, false)?;
                o.extend_from_slice(b"mode=");
                octal(o, mode);
                o.extend_from_slice(b" dev=0x");
                hex(o, rdev);
            }
            B::Mkfifo { path, .. } => {
                self.head(o, "mkfifo", path, false)?;
            }
            B::Mksock { path, .. } => {
                self.head(o, "mksock", path, false)?;
            }
            B::Symlink { path, link, .. } => {
                self.head_args(o, "symlink", path, false)?;
                o.extend_from_slice(b"dest=");
                write_escaped(o, link);
            }
            B::Rename { path, to } => {
                self.full(to).map_err(|e| format!("rename: {e}"))?;
                self.head_args(o, "rename", path, false)?;
                o.extend_from_slice(b"dest=");
                write_escaped(o, &self.scratch);
            }
            B::Link { path, link } => {
                self.head_args(o, "link", path, false)?;
                o.extend_from_slice(b"dest=");
                write_escaped(o, link);
            }
            B::Unlink { path } => {
                self.head(o, "unlink", path, false)?;
            }
            B::Rmdir { path } => {
                self.head(o, "rmdir", path, false)?;
            }
            B::SetXattr { path, name, data } => {
                self.head_args(o, "set_xattr", path, false)?;
                o.extend_from_slice(b"name=");
                o.extend_from_slice(cstr(name));
                o.extend_from_slice(b" data=");
                o.extend_from_slice(cstr(data));
                o.extend_from_slice(b" len=");
                num(o, data.len());
            }
            B::RemoveXattr { path, name } => {
                self.head_args(o, "remove_xattr", path, false)?;
                o.extend_from_slice(b"name=");
                o.extend_from_slice(cstr(name));
            }
            B::Write { path, offset, data } => {
                self.head_args(o, "write", path, false)?;
                o.extend_from_slice(b"offset=");
                num(o, offset);
                o.extend_from_slice(b" len=");
                num(o, data.len());
            }
            B::Clone {
                path,
                offset,
                len,
                clone_path,
                clone_offset,
                ..
            } => {
                self.full(clone_path).map_err(|e| format!("clone: {e}"))?;
                self.head_args(o, "clone", path, false)?;
                o.extend_from_slice(b"offset=");
                num(o, offset);
                o.extend_from_slice(b" len=");
                // btrfs-progs reads the length into an `int`.
                num(o, len as i32 as i64 as u64);
                o.extend_from_slice(b" from=");
                o.extend_from_slice(&self.scratch);
                o.extend_from_slice(b" clone_offset=");
                num(o, clone_offset);
            }
            B::Truncate { path, size } => {
                self.head_args(o, "truncate", path, false)?;
                o.extend_from_slice(b"size=");
                num(o, size);
            }
            B::Chmod { path, mode } => {
                self.head_args(o, "chmod", path, false)?;
                o.extend_from_slice(b"mode=");
                octal(o, mode);
            }
            B::Chown { path, uid, gid } => {
                self.head_args(o, "chown", path, false)?;
                o.extend_from_slice(b"gid=");
                num(o, gid);
                o.extend_from_slice(b" uid=");
                num(o, uid);
            }
            B::Utimes {
                path,
                atime,
                mtime,
                ctime,
                ..
            } => {
                // The times first: their error comes before a path's.
                let times = &mut self.scratch;
                times.clear();
                for (name, t) in [("atime=", atime), (" mtime=", mtime), (" ctime=", ctime)] {
                    times.extend_from_slice(name.as_bytes());
                    timestamp(times, &t).ok_or_else(|| {
                        format!(
                            "failed to convert time {}.{:09} to local time",
                            t.sec_signed(),
                            t.nsec
                        )
                    })?;
                }
                self.head_args(o, "utimes", path, false)?;
                o.extend_from_slice(&self.scratch);
            }
            B::End => return Ok(false),
            B::UpdateExtent { path, offset, size } => {
                self.head_args(o, "update_extent", path, false)?;
                o.extend_from_slice(b"offset=");
                num(o, offset);
                o.extend_from_slice(b" len=");
                num(o, size);
            }
            B::Fallocate {
                path,
                mode,
                offset,
                size,
            } => {
                self.head_args(o, "fallocate", path, false)?;
                o.extend_from_slice(b"mode=");
                num(o, mode as i32);
                o.extend_from_slice(b" offset=");
                num(o, offset);
                o.extend_from_slice(b" len=");
                num(o, size);
            }
            B::Fileattr { path, attr } => {
                self.head_args(o, "fileattr", path, false)?;
                o.extend_from_slice(b"fileattr=0x");
                num(o, attr);
            }
            B::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => {
                self.head_args(o, "encoded_write", path, false)?;
                o.extend_from_slice(b"offset=");
                num(o, offset);
                o.extend_from_slice(b" len=");
                num(o, data.len());
                o.extend_from_slice(b", unencoded_file_len=");
                num(o, unencoded_file_len);
                o.extend_from_slice(b", unencoded_len=");
                num(o, unencoded_len);
                o.extend_from_slice(b", unencoded_offset=");
                num(o, unencoded_offset);
                o.extend_from_slice(b", compression=");
                num(o, compression.unwrap_or(0));
                o.extend_from_slice(b", encryption=");
                num(o, encryption.unwrap_or(0));
            }
            B::EnableVerity {
                path,
                algorithm,
                block_size,
                salt,
                sig,
            } => {
                self.head_args(o, "enable_verity", path, false)?;
                o.extend_from_slice(b"algorithm=");
                num(o, algorithm);
                o.extend_from_slice(b" block_size=");
                num(o, block_size);
                o.extend_from_slice(b" salt_len=");
                num(o, salt.len());
                o.extend_from_slice(b" sig_len=");
                num(o, sig.len());
            }
            B::Unknown { .. } => return Ok(false),
        }
        o.push(b'\n');
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64) -> String {
        let mut o = Vec::new();
        match timestamp(
            &mut o,
            &Timespec {
                sec: sec as u64,
                nsec: 0,
            },
        ) {
            Some(()) => String::from_utf8(o).unwrap(),
            None => "FAIL".into(),
        }
    }

    #[test]
    fn timestamps_match_glibc_under_tz_utc() {
        // Reference values printed by glibc 2.36 strftime("%FT%T%z") of
        // localtime_r with TZ=UTC.
        assert_eq!(ts(0), "1970-01-01T00:00:00+0000");
        assert_eq!(ts(-1), "1969-12-31T23:59:59+0000");
        assert_eq!(ts(-62135596800), "1-01-01T00:00:00+0000");
        assert_eq!(ts(-62198755200), "-1-01-01T00:00:00+0000");
        assert_eq!(ts(253402300800), "10000-01-01T00:00:00+0000");
        assert_eq!(ts(-100000000000), "-1199-02-15T14:13:20+0000");
        assert_eq!(ts(67767976233316800), "2147483647-12-29T12:00:00+0000");
        assert_eq!(ts(67768036191676799), "-2147481749-12-31T23:59:59+0000");
        assert_eq!(ts(67768036191676800), "FAIL");
    }

    #[test]
    fn paths_escape_like_btrfs_progs() {
        let mut o = Vec::new();
        let w = write_escaped(&mut o, b"a b\\c\n\x01\x7f\xff\0hidden");
        assert_eq!(o, b"a\\ b\\\\c\\n\\001\\177\\377".to_vec());
        assert_eq!(w, o.len());
    }

    #[test]
    fn path_cat_drops_one_trailing_slash() {
        let mut o = Vec::new();
        path_cat(b".", b"", &mut o).unwrap();
        assert_eq!(o, b"./");
        path_cat(b"./snap/", b"dir/", &mut o).unwrap();
        assert_eq!(o, b"./snap/dir");
        assert!(path_cat(b".", &[b'x'; 4093], &mut o).is_err());
        assert!(path_cat(b".", &[b'x'; 4092], &mut o).is_ok());
    }
}
