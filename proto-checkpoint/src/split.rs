//! Splitting data commands into valid commands: the profile's rule.

use alloc::vec::Vec;

use proto_tlv::{Attrs, CmdBuf, Profile, ATTR_HEADER_LEN, CMD_HEADER_LEN};

/// Where the data of a splittable command lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataLayout {
    /// Bytes of the command before its data (header and attributes). Every
    /// piece's prefix has this length too.
    pub data_start: usize,
    /// Data bytes the command carries (at least 1).
    pub data_len: u64,
    /// Position of the first data byte in the object it is written to
    /// (btrfs: the file offset).
    pub position: u64,
}

/// A profile's rule for data commands: which may be split, and how a piece
/// of one is framed as a valid command of its own.
///
/// A piece carrying data bytes `from..from + len` is the command's prefix
/// (as [`write_prefix`](Split::write_prefix) rewrites it) followed by those
/// bytes. Commands the rule does not recognise are never split.
pub trait Split {
    /// The layout of `cmd` (one whole encoded command of `profile`, whose
    /// CRC has not been checked yet) when it is a data command this rule
    /// splits, else `None`. Must not panic on any bytes.
    fn layout(&self, profile: &Profile, cmd: &[u8]) -> Option<DataLayout>;

    /// Writes into `prefix` (exactly `layout.data_start` bytes) the header
    /// and attributes of the piece of `cmd` that carries data bytes
    /// `from..from + len` (with `len >= 1` and `from + len <=
    /// layout.data_len`): the header's length set, its CRC field zero.
    fn write_prefix(
        &self,
        profile: &Profile,
        cmd: &[u8],
        layout: &DataLayout,
        from: u64,
        len: usize,
        prefix: &mut [u8],
    );

    /// Appends to `key` what identifies the object a data command writes
    /// to: two pieces of one command have the same key, and commands for
    /// other objects have other keys. Used by [`compare`](crate::compare).
    fn object_key(&self, profile: &Profile, cmd: &[u8], layout: &DataLayout, key: &mut Vec<u8>);

    /// The path (or other name) of the object `cmd` concerns, for messages:
    /// any command, data command or not.
    fn path<'c>(&self, profile: &Profile, cmd: &'c [u8]) -> Option<&'c [u8]>;
}

/// A rule or none: `None` never splits, every command is emitted whole (a
/// format without data commands).
impl<S: Split> Split for Option<S> {
    fn layout(&self, profile: &Profile, cmd: &[u8]) -> Option<DataLayout> {
        self.as_ref()?.layout(profile, cmd)
    }
    fn write_prefix(
        &self,
        profile: &Profile,
        cmd: &[u8],
        layout: &DataLayout,
        from: u64,
        len: usize,
        prefix: &mut [u8],
    ) {
        if let Some(s) = self {
            s.write_prefix(profile, cmd, layout, from, len, prefix);
        }
    }
    fn object_key(&self, profile: &Profile, cmd: &[u8], layout: &DataLayout, key: &mut Vec<u8>) {
        if let Some(s) = self {
            s.object_key(profile, cmd, layout, key);
        }
    }
    fn path<'c>(&self, profile: &Profile, cmd: &'c [u8]) -> Option<&'c [u8]> {
        self.as_ref()?.path(profile, cmd)
    }
}

/// The usual data-command rule, btrfs's `WRITE` among them: commands of type
/// `cmd` whose data attribute `data_attr` is last and whose u64 attribute
/// `offset_attr` says where the data goes. A piece keeps every other
/// attribute as it is, advances the offset by the data bytes before it, and
/// carries its share of the data.
///
/// Only commands whose layout leaves no doubt are split: the offset and
/// data attributes each exactly once, the offset 8 bytes long, the data
/// last and at least one byte long, the whole payload well formed, and
/// offset plus length within a u64. Anything else is emitted whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSplit {
    /// The command type.
    pub cmd: u16,
    /// The u64 attribute holding the position of the data.
    pub offset_attr: u16,
    /// The data attribute (the profile says whether it has a length field).
    pub data_attr: u16,
    /// The attribute naming the object, for messages.
    pub path_attr: Option<u16>,
}

/// One attribute found by [`walk`]: type, offset of its value in the
/// command, value length.
#[derive(Clone, Copy)]
struct Found {
    ty: u16,
    value_at: usize,
    len: usize,
}

/// Walks the attributes of a whole command (`proto_tlv::Attrs`, its layout
/// checked first), calling `f` for each; `None` when the layout is broken.
fn walk(profile: &Profile, cmd: &[u8], mut f: impl FnMut(Found)) -> Option<()> {
    let data_attr = profile.unbounded_data_attr;
    for a in Attrs::checked(cmd.get(CMD_HEADER_LEN..)?, data_attr).ok()? {
        let header = if data_attr == Some(a.ty()) {
            2
        } else {
            ATTR_HEADER_LEN
        };
        f(Found {
            ty: a.ty(),
            value_at: usize::try_from(a.offset()).ok()? + header,
            len: a.value().len(),
        });
    }
    Some(())
}

impl DataSplit {
    fn offset_value_at(&self, profile: &Profile, cmd: &[u8]) -> Option<usize> {
        let mut at = None;
        walk(profile, cmd, |a| {
            if a.ty == self.offset_attr {
                at = Some(a.value_at);
            }
        })?;
        at
    }
}

impl Split for DataSplit {
    fn layout(&self, profile: &Profile, cmd: &[u8]) -> Option<DataLayout> {
        if CmdBuf::new_checked(cmd)?.cmd() != self.cmd {
            return None;
        }
        let (mut offsets, mut datas) = (0u32, 0u32);
        let mut offset = None;
        let mut data: Option<Found> = None;
        let mut after_data = false;
        walk(profile, cmd, |a| {
            after_data |= data.is_some();
            if a.ty == self.offset_attr {
                offsets += 1;
                offset = Some(a);
            } else if a.ty == self.data_attr {
                datas += 1;
                data = Some(a);
            }
        })?;
        let (offset, data) = (offset?, data?);
        if offsets != 1 || datas != 1 || after_data || offset.len != 8 || data.len == 0 {
            return None;
        }
        // The data runs to the end of the command: nothing follows it.
        if data.value_at + data.len != cmd.len() {
            return None;
        }
        let v = cmd.get(offset.value_at..offset.value_at + 8)?;
        let position = u64::from_le_bytes(v.try_into().ok()?);
        let data_len = data.len as u64;
        position.checked_add(data_len)?;
        Some(DataLayout {
            data_start: data.value_at,
            data_len,
            position,
        })
    }

    fn write_prefix(
        &self,
        profile: &Profile,
        cmd: &[u8],
        layout: &DataLayout,
        from: u64,
        len: usize,
        prefix: &mut [u8],
    ) {
        let start = layout.data_start;
        prefix.copy_from_slice(&cmd[..start]);
        let payload = (start - CMD_HEADER_LEN + len) as u32;
        if let Some(mut c) = CmdBuf::new_checked(&mut *prefix) {
            c.set_payload_len(payload);
            c.set_crc(0);
        }
        if let Some(at) = self.offset_value_at(profile, cmd) {
            let pos = layout.position.wrapping_add(from);
            prefix[at..at + 8].copy_from_slice(&pos.to_le_bytes());
        }
        if profile.unbounded_data_attr != Some(self.data_attr) {
            // A 16-bit length: the piece is no longer than the original.
            prefix[start - 2..start].copy_from_slice(&(len as u16).to_le_bytes());
        }
    }

    fn object_key(&self, profile: &Profile, cmd: &[u8], _: &DataLayout, key: &mut Vec<u8>) {
        if let Some(c) = CmdBuf::new_checked(cmd) {
            key.extend_from_slice(&c.cmd().to_le_bytes());
        }
        let _ = walk(profile, cmd, |a| {
            if a.ty != self.offset_attr && a.ty != self.data_attr {
                key.extend_from_slice(&a.ty.to_le_bytes());
                key.extend_from_slice(&(a.len as u64).to_le_bytes());
                key.extend_from_slice(&cmd[a.value_at..a.value_at + a.len]);
            }
        });
    }

    fn path<'c>(&self, profile: &Profile, cmd: &'c [u8]) -> Option<&'c [u8]> {
        let ty = self.path_attr?;
        let mut found = None;
        walk(profile, cmd, |a| {
            // The last one wins, as in btrfs-progs.
            if a.ty == ty {
                found = Some((a.value_at, a.len));
            }
        })?;
        let (at, len) = found?;
        cmd.get(at..at + len)
    }
}
