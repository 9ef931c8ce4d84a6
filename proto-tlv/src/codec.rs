//! [`CommandCodec`]: the TLV commands of any [`Profile`] as a
//! `tokio_util::codec` [`Decoder`] and [`Encoder`] (feature `tokio`), for
//! `FramedRead`, `FramedWrite` and `Framed` over any `AsyncRead` /
//! `AsyncWrite`.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::decode::{decode_command, frame_len};
use crate::encode::{raw_header, with_cmd};
use crate::{
    encode_command_into, encoded_len, Command, Error, ErrorKind, OwnedCommand, Profile,
    CMD_HEADER_LEN,
};

/// An error of [`CommandCodec`]: I/O (from the framed reader or writer), or
/// the stream itself, with its command index and byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The stream is malformed (decoding), or a command cannot be encoded
    /// under the profile (encoding).
    #[error(transparent)]
    Tlv(#[from] Error),
}

impl CodecError {
    /// The codec error, when it is one (not I/O).
    pub fn tlv(&self) -> Option<&Error> {
        match self {
            CodecError::Tlv(e) => Some(e),
            CodecError::Io(_) => None,
        }
    }
}

/// A decoded, CRC-checked command that owns its bytes: a [`Bytes`] holding
/// the whole encoded command (header and payload), split off the read
/// buffer without a copy, with its index and stream offset.
/// [`CommandFrame::command`] borrows the usual [`Command`] view of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandFrame {
    bytes: Bytes,
    cmd: u16,
    crc: u32,
    index: u64,
    offset: u64,
    profile: Profile,
}

impl CommandFrame {
    /// The command, as [`Commands`](crate::Commands) would yield it
    /// (attributes, index, offset, profile).
    pub fn command(&self) -> Command<'_> {
        Command::checked(
            self.cmd,
            self.crc,
            self.bytes.get(CMD_HEADER_LEN..).unwrap_or_default(),
            self.index,
            self.offset,
            self.profile,
        )
    }
    /// Command type.
    pub fn cmd(&self) -> u16 {
        self.cmd
    }
    /// Whether this is the profile's END command.
    pub fn is_end(&self) -> bool {
        self.cmd == self.profile.end_cmd
    }
    /// 0-based index of the command in its stream.
    pub fn index(&self) -> u64 {
        self.index
    }
    /// Stream byte offset of the command header.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The whole encoded command, header included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// The encoded command, header included.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl From<&CommandFrame> for OwnedCommand {
    fn from(f: &CommandFrame) -> Self {
        OwnedCommand::from(&f.command())
    }
}

/// The TLV commands of one [`Profile`] as a `tokio_util` codec.
///
/// Decoding yields [`CommandFrame`]s, each checked as
/// [`Commands`](crate::Commands) checks it (length limit, CRC, attribute
/// layout) and numbered from the codec's base offset. The declared length
/// of a command is checked against the profile as soon as its 10-byte
/// header is buffered, before the codec asks the read buffer for room for
/// it: a peer cannot make it reserve more than the profile's maximum
/// command length. The codec stops for good after the first error, and
/// after the END command: a byte after END is a `TrailingData` error.
/// At the end of input ([`Decoder::decode_eof`]) a partial command is a
/// `Truncated` error, and a stream that stops between commands without END
/// a `MissingEnd` error, both with the command index and byte offset.
///
/// Encoding takes an [`OwnedCommand`] (attributes encoded under the
/// profile), a borrowed [`Command`] (its payload passed through as it is,
/// header and CRC made anew for this profile) or a [`CommandFrame`] (its
/// bytes as they are when it was decoded under this profile). A command
/// the profile cannot carry (too long, an attribute after the unbounded
/// data attribute) is an error naming its type, and nothing is written.
///
/// ```
/// use futures_util::{SinkExt, StreamExt};
/// use proto_tlv::{CommandCodec, CrcVariant, ErrorKind, OwnedCommand, Profile};
/// use tokio_util::codec::{FramedRead, FramedWrite};
///
/// let profile = Profile { crc: CrcVariant::Standard, max_payload_len: 1 << 16,
///                         unbounded_data_attr: Some(19), end_cmd: 21 };
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     // Two commands written through a pipe of 64 bytes...
///     let (near, far) = tokio::io::duplex(64);
///     let mut sink = FramedWrite::new(near, CommandCodec::new(profile));
///     let send = async move {
///         sink.send(OwnedCommand { cmd: 3, attrs: vec![(15, b"a/b".to_vec()), (19, vec![7; 300])] })
///             .await.unwrap();
///         sink.send(OwnedCommand { cmd: 21, attrs: vec![] }).await.unwrap();
///         let mut pipe = sink.into_inner();
///         tokio::io::AsyncWriteExt::write_all(&mut pipe, &[1, 2, 3]).await.unwrap(); // then junk
///     };
///     // ... come out checked at the other end, with their index and offset.
///     let receive = async move {
///         let mut commands = FramedRead::new(far, CommandCodec::new(profile));
///         let first = commands.next().await.unwrap().unwrap();
///         assert_eq!((first.cmd(), first.index(), first.offset()), (3, 0, 0));
///         assert_eq!(first.command().require(15).unwrap().as_path(), b"a/b");
///         let end = commands.next().await.unwrap().unwrap();
///         assert!(end.is_end());
///         assert_eq!((end.index(), end.offset()), (1, 319));
///         // Bytes after END: a typed error at the byte after it.
///         let err = commands.next().await.unwrap().unwrap_err();
///         let err = err.tlv().unwrap();
///         assert!(matches!(err.kind, ErrorKind::TrailingData { .. }));
///         assert_eq!((err.index, err.offset), (2, 329));
///     };
///     tokio::join!(send, receive);
/// });
/// ```
#[derive(Clone, Debug)]
pub struct CommandCodec {
    profile: Profile,
    index: u64,
    offset: u64,
    ended: bool,
    failed: Option<Error>,
}

impl CommandCodec {
    /// A codec for `profile` whose first command is at stream byte 0.
    pub fn new(profile: Profile) -> Self {
        Self::with_offset(profile, 0)
    }

    /// A codec for `profile` whose first command is at stream byte
    /// `base_offset` (after a stream header the caller read, say).
    pub fn with_offset(profile: Profile, base_offset: u64) -> Self {
        CommandCodec {
            profile,
            index: 0,
            offset: base_offset,
            ended: false,
            failed: None,
        }
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// Commands decoded so far.
    pub fn commands(&self) -> u64 {
        self.index
    }
    /// Stream offset of the next command to decode.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Whether the END command was decoded.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Re-arms the decoder for a new stream of `profile` whose first
    /// command is at stream byte `base_offset` (after END, the next stream
    /// of a concatenation and the header the caller read before it). A
    /// failed codec stays failed.
    pub fn restart(&mut self, profile: Profile, base_offset: u64) {
        self.profile = profile;
        self.index = 0;
        self.offset = base_offset;
        self.ended = false;
    }

    fn fail(&mut self, e: Error) -> CodecError {
        self.failed = Some(e.clone());
        e.into()
    }
}

impl Decoder for CommandCodec {
    type Item = CommandFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<CommandFrame>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone().into());
        }
        if src.is_empty() {
            return Ok(None);
        }
        if self.ended {
            let e = ErrorKind::TrailingData {
                len: src.len() as u64,
            }
            .at(self.index, self.offset);
            return Err(self.fail(e));
        }
        if src.len() < CMD_HEADER_LEN {
            return Ok(None);
        }
        // Checked against the profile before any room is asked for.
        let total = match frame_len(src, &self.profile, self.index, self.offset) {
            Ok(t) => t,
            Err(e) => return Err(self.fail(e)),
        };
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let bytes = src.split_to(total).freeze();
        let (cmd, crc) = match decode_command(&bytes, &self.profile, self.index, self.offset) {
            Ok((c, _)) => (c.cmd(), c.crc()),
            Err(e) => return Err(self.fail(e)),
        };
        let frame = CommandFrame {
            bytes,
            cmd,
            crc,
            index: self.index,
            offset: self.offset,
            profile: self.profile,
        };
        self.index += 1;
        self.offset += total as u64;
        self.ended = frame.is_end();
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<CommandFrame>, CodecError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.ended {
            return Ok(None);
        }
        let kind = match buf.len() {
            0 => ErrorKind::MissingEnd,
            n if n < CMD_HEADER_LEN => ErrorKind::Truncated {
                what: "command header",
                needed: CMD_HEADER_LEN as u64,
                available: n as u64,
            },
            n => ErrorKind::Truncated {
                what: "command payload",
                needed: frame_len(buf, &self.profile, self.index, self.offset)? as u64,
                available: n as u64,
            },
        };
        Err(self.fail(kind.at(self.index, self.offset)))
    }
}

impl Encoder<&OwnedCommand> for CommandCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &OwnedCommand, dst: &mut BytesMut) -> Result<(), CodecError> {
        let attrs = item.attr_values();
        let n = encoded_len(&self.profile, &attrs).map_err(|e| with_cmd(e, item.cmd))?;
        let start = dst.len();
        dst.resize(start + n, 0);
        if let Err(e) = encode_command_into(&self.profile, item.cmd, &attrs, &mut dst[start..]) {
            dst.truncate(start);
            return Err(e.into());
        }
        Ok(())
    }
}

impl Encoder<OwnedCommand> for CommandCodec {
    type Error = CodecError;

    fn encode(&mut self, item: OwnedCommand, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&item, dst)
    }
}

impl Encoder<Command<'_>> for CommandCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Command<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        let payload = item.payload();
        let header = raw_header(&self.profile, item.cmd(), payload)?;
        dst.reserve(header.len() + payload.len());
        dst.put_slice(&header);
        dst.put_slice(payload);
        Ok(())
    }
}

impl Encoder<CommandFrame> for CommandCodec {
    type Error = CodecError;

    fn encode(&mut self, item: CommandFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        if item.profile == self.profile {
            dst.extend_from_slice(&item.bytes);
            Ok(())
        } else {
            self.encode(item.command(), dst)
        }
    }
}
