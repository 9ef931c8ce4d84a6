//! Checking commands as [`BtrfsCommand::parse`] does, without building the
//! typed view each time: what `verify` needs, at a fraction of the cost.

use proto_tlv::{Command, Error};

use crate::{AttrType as A, BtrfsCommand, CommandType as C};

/// Attributes the typed view reads as bytes of any length: their lengths
/// play no part in whether a command parses.
const ANY_LEN_TYPES: [A; 9] = [
    A::PATH,
    A::PATH_TO,
    A::PATH_LINK,
    A::CLONE_PATH,
    A::XATTR_NAME,
    A::XATTR_DATA,
    A::DATA,
    A::VERITY_SALT_DATA,
    A::VERITY_SIG_DATA,
];

/// [`ANY_LEN_TYPES`] as a bit set (all of them are below 64).
const ANY_LEN: u64 = {
    let mut m = 0u64;
    let mut i = 0;
    while i < ANY_LEN_TYPES.len() {
        assert!(ANY_LEN_TYPES[i].0 < 64);
        m |= 1 << ANY_LEN_TYPES[i].0;
        i += 1;
    }
    m
};

/// Most attributes a remembered layout has (kernel commands carry at most
/// 8); a command with more is always parsed.
const MAX_ATTRS: usize = 8;
/// Command types below this have a remembered layout; others are parsed.
const TYPES: usize = 32;

/// The layout of a command: its attributes in order, each as its type and,
/// unless it is one of [`ANY_LEN_TYPES`], its length. Slots past `n` are 0.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    n: usize,
    attrs: [u64; MAX_ATTRS],
}

/// Checks commands exactly as [`BtrfsCommand::parse`] does (the same
/// successes, the same errors) and returns the file data a `write` or
/// `encoded_write` carries.
///
/// Whether a command parses depends only on its type and its layout: which
/// attributes it has, in which order, and the lengths of those read as
/// numbers, UUIDs or times. The checker remembers, for each command type,
/// the layout of the last command that parsed; a command with that same
/// layout parses too, and needs only one walk over its attributes. Any
/// other command is parsed (and, if it parses, its layout remembered). The
/// commands of a kernel stream share a handful of layouts.
#[derive(Clone, Debug)]
pub struct CommandChecker {
    known: [Layout; TYPES],
}

impl Default for CommandChecker {
    fn default() -> Self {
        CommandChecker {
            // n = usize::MAX: no layout remembered yet.
            known: [Layout {
                n: usize::MAX,
                attrs: [0; MAX_ATTRS],
            }; TYPES],
        }
    }
}

impl CommandChecker {
    /// A checker that has seen no command.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(Some(data))` for a `write` or `encoded_write`, `Ok(None)` for
    /// any other command that [`BtrfsCommand::parse`] accepts, and its
    /// error otherwise.
    #[inline]
    pub fn check<'a>(&mut self, cmd: &Command<'a>) -> Result<Option<&'a [u8]>, Error> {
        let ty = usize::from(cmd.cmd());
        let known = self.known.get(ty).copied().unwrap_or_default();
        let mut layout = Layout::default();
        let mut data = None;
        let mut fits = ty < TYPES;
        // Compared as it is walked (not stored, then loaded back).
        let mut diff = 0;
        for a in cmd.attrs() {
            let Some(slot) = layout.attrs.get_mut(layout.n) else {
                fits = false;
                break;
            };
            let t = a.ty();
            let len = if t < 64 && ANY_LEN >> t & 1 == 1 {
                u64::from(u32::MAX)
            } else {
                a.value().len() as u64
            };
            let v = u64::from(t) << 32 | len;
            *slot = v;
            diff |= v ^ known.attrs[layout.n];
            layout.n += 1;
            if t == A::DATA.0 {
                data = Some(a.value());
            }
        }
        if fits && diff == 0 && known.n == layout.n {
            let write = matches!(C(cmd.cmd()), C::WRITE | C::ENCODED_WRITE);
            return Ok(if write { data } else { None });
        }
        let data = match BtrfsCommand::parse(cmd)? {
            BtrfsCommand::Write { data, .. } | BtrfsCommand::EncodedWrite { data, .. } => {
                Some(data)
            }
            _ => None,
        };
        if fits {
            self.known[ty] = layout;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BtrfsStream, StreamWriter};
    use proto_tlv::{encode_command, AttrValue, Value};

    /// Every command (type, attributes) below, checked one after the other
    /// by one checker, gives what parse gives.
    #[test]
    fn agrees_with_parse_whatever_came_before() {
        let b = |t: A, v: &'static [u8]| AttrValue::new(t.0, Value::Bytes(v));
        // A utimes, with an otime (of any length) or not.
        let utimes = |otime: Option<&'static [u8]>| {
            let times = [A::ATIME, A::MTIME, A::CTIME].map(|t| b(t, &[0; 12]));
            let mut attrs = vec![b(A::PATH, b"u")];
            attrs.extend(times);
            attrs.extend(otime.map(|o| b(A::OTIME, o)));
            (C::UTIMES, attrs)
        };
        let cmds: Vec<(C, Vec<AttrValue<'static>>)> = vec![
            (C::CHMOD, vec![b(A::PATH, b"a"), b(A::MODE, &[1; 8])]),
            (C::CHMOD, vec![b(A::PATH, b"abc"), b(A::MODE, &[2; 8])]),
            // The same types, a mode of the wrong size: an error.
            (C::CHMOD, vec![b(A::PATH, b"abc"), b(A::MODE, &[2; 4])]),
            (C::CHMOD, vec![b(A::PATH, b"abc")]),
            // A duplicate: the last one wins, in both.
            (
                C::CHMOD,
                vec![b(A::PATH, b"a"), b(A::MODE, &[1; 8]), b(A::MODE, &[1; 3])],
            ),
            (
                C::CHMOD,
                vec![b(A::PATH, b"a"), b(A::MODE, &[1; 3]), b(A::MODE, &[1; 8])],
            ),
            (
                C::CHMOD,
                vec![b(A::PATH, b"a"), b(A::MODE, &[1; 8]), b(A::MODE, &[1; 3])],
            ),
            (
                C::WRITE,
                vec![
                    b(A::PATH, b"f"),
                    b(A::FILE_OFFSET, &[0; 8]),
                    b(A::DATA, b"xyz"),
                ],
            ),
            (
                C::WRITE,
                vec![
                    b(A::PATH, b"g"),
                    b(A::FILE_OFFSET, &[0; 8]),
                    b(A::DATA, b"hello"),
                ],
            ),
            (
                C::WRITE,
                vec![
                    b(A::PATH, b"g"),
                    b(A::FILE_OFFSET, &[0; 7]),
                    b(A::DATA, b"hello"),
                ],
            ),
            utimes(None),
            utimes(Some(&[0; 11])),
            utimes(None),
            (C(99), vec![b(A::PATH, b"u")]),
            (C(99), vec![b(A::PATH, b"u")]),
        ];
        let mut bytes = Vec::new();
        let w = StreamWriter::new(2, &mut bytes).unwrap();
        for (t, attrs) in &cmds {
            encode_command(w.profile(), t.0, attrs, &mut bytes).unwrap();
        }
        w.finish(&mut bytes).unwrap();
        let mut checker = CommandChecker::new();
        for cmd in BtrfsStream::parse(&bytes).unwrap().commands() {
            let cmd = cmd.unwrap();
            let want = BtrfsCommand::parse(&cmd).map(|v| match v {
                BtrfsCommand::Write { data, .. } | BtrfsCommand::EncodedWrite { data, .. } => {
                    Some(data)
                }
                _ => None,
            });
            // Twice: the second time its own layout is remembered (if it parsed).
            for _ in 0..2 {
                let got = checker.check(&cmd);
                assert_eq!(
                    got.as_ref().map_err(ToString::to_string),
                    want.as_ref().map_err(ToString::to_string),
                    "command {}",
                    cmd.index()
                );
            }
        }
    }
}
