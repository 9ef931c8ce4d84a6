//! Formats as a session sees them: what a sender offers of a file of any
//! [`Format`] ([`Offer`]: its streams as contexts, the largest unit, the
//! CRC its commands use, and how to arm an emitter over any selection of
//! them, from the start or from a token), and formats told apart by their
//! fixed header ([`SessionFormat`], [`Detect`]), so that a driver that
//! takes several formats names none of them.
//!
//! ```
//! use std::sync::Arc;
//! use proto_checkpoint::native::{Writer, PRSTREAM};
//! use proto_header::{Endian, V1Header};
//! use proto_session::offer::{detect, BoxSource, SessionFormat};
//! use proto_tlv::{AttrValue, Value};
//!
//! // A native `PRSTREAM` stream of two commands.
//! let header = V1Header {
//!     byte_order: Endian::Little,
//!     features_supported: 0,
//!     features_required: 0,
//!     stream_id: [7; 16],
//!     contexts: Vec::new(),
//! };
//! let mut w = Writer::v1(Vec::new(), &header).unwrap();
//! w.write_command(1, &[AttrValue::new(1, Value::Bytes(b"one"))]).unwrap();
//! w.write_command(1, &[AttrValue::new(1, Value::Bytes(b"two"))]).unwrap();
//! let bytes: Arc<[u8]> = w.finish().unwrap().into();
//! let formats: [&dyn SessionFormat; 1] = [&PRSTREAM];
//! let format = detect(&formats, &bytes).unwrap();
//! assert_eq!(format.name(), "native");
//! let offer = format
//!     .offer(Box::new(move || Ok(Box::new(bytes.clone()) as BoxSource)), 1)
//!     .unwrap();
//! assert_eq!(offer.streams().len(), 1);
//! assert_eq!(offer.contexts()[0].name, "stream:1");
//! ```

use proto_checkpoint::{
    contexts, list_streams, Emitter, Format, Head, Producer, ReadProducer, Source, Spans,
    StreamSpan, Token, Units, Validator, ValidatorState,
};
use std::io::Read;

use proto_header::{Context, FixedHeaderFormat};
use proto_tlv::CrcVariant;

use crate::error::{BoxError, ResumeError, SessionError};
use crate::receive::Check;
use crate::send::{Arm, Emission};
use crate::wire::MAX_UNIT;

/// A random-access source a sender reads its file through.
pub type BoxSource = Box<dyn Source + Send>;

/// Opens the sender's file again (a new [`Source`] over the same bytes):
/// whenever the sender re-arms.
pub type Open = Box<dyn FnMut() -> Result<BoxSource, BoxError> + Send>;

/// Starts the stream again (a running program's output, say): whenever a
/// live sender re-arms.
pub type MakeStream = Box<dyn FnMut() -> Result<Box<dyn Read + Send>, BoxError> + Send>;

/// Makes the emitter of the selected contexts, from the start or re-armed
/// from a token.
type ArmFn =
    Box<dyn FnMut(&[u32], Option<&Token>) -> Result<Box<dyn Emission>, SessionError> + Send>;

/// What a sender offers: one file of a [`Format`] (its streams, each a
/// context), or a stream made as it is read ([`Offer::live`]), and how to
/// arm an emitter over any selection of them ([`Arm`], which
/// [`Sending::resume`](crate::send::Sending::resume) takes).
pub struct Offer {
    format: &'static str,
    streams: Vec<StreamSpan>,
    contexts: Vec<Context>,
    stream_id: [u8; 16],
    max_unit: usize,
    unit_crc: Option<CrcVariant>,
    arm: ArmFn,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("format", &self.format)
            .field("streams", &self.streams)
            .field("max_unit", &self.max_unit)
            .field("unit_crc", &self.unit_crc)
            .finish_non_exhaustive()
    }
}

impl Offer {
    /// The streams of the file `open` opens, in `format`: found by one walk
    /// of its command headers. Emitters it arms make a safe point every
    /// `safe_every` units (a token names its own interval when resumed).
    pub fn new<F>(format: F, mut open: Open, safe_every: u64) -> Result<Offer, SessionError>
    where
        F: Format + Send + 'static,
        F::Split: Send,
    {
        let mut src = open().map_err(SessionError::Source)?;
        let streams = list_streams(&format, &mut *src).map_err(source_err)?;
        // Emitters fill buffers of the file's largest unit, so they never
        // split a command, and the window reserves what the file needs,
        // not 16 MiB more for every transfer.
        let max_unit = streams
            .iter()
            .map(|s| s.largest)
            .max()
            .unwrap_or(MAX_UNIT)
            .min(MAX_UNIT);
        let crcs = streams
            .iter()
            .map(|s| format.profile(s.version).map(|p| p.crc))
            .collect::<Result<Vec<_>, _>>()
            .map_err(source_err)?;
        let unit_crc = crcs
            .first()
            .copied()
            .filter(|c| crcs.iter().all(|x| x == c));
        let stream_id = format
            .producer(src, safe_every)
            .map_err(source_err)?
            .stream_id();
        let name = format.name();
        let spans_of = streams.clone();
        let arm: ArmFn = Box::new(move |selection, token| {
            let src = open().map_err(SessionError::Source)?;
            let ranges: Vec<(u64, u64)> = selection
                .iter()
                .filter_map(|id| spans_of.get((*id as usize).checked_sub(1)?))
                .map(|s| (s.offset, s.len))
                .collect();
            let spans = Spans::new(src, &ranges).map_err(source_err)?;
            let p = format.producer(spans, safe_every).map_err(source_err)?;
            emitter(&format, p, token)
        });
        Ok(Offer {
            format: name,
            contexts: contexts(&streams),
            streams,
            stream_id,
            max_unit,
            unit_crc,
            arm,
        })
    }

    /// A stream made as it is read (`btrfs send`'s output, standard input):
    /// one context, read once per arming, front to back, nothing spooled
    /// ([`ReadProducer`]). The first stream `make` gives is read at once
    /// for the stream id (its first 64 KiB) and armed first; every later
    /// arming (a sender that lost its window re-armed from the receiver's
    /// token) makes the stream again and skips what the receiver has,
    /// refusing a stream that differs from the one the token was made over.
    pub fn live<F>(format: F, mut make: MakeStream) -> Result<Offer, SessionError>
    where
        F: Format + Send + 'static,
        F::Split: Send,
    {
        let mut first = ReadProducer::new(format.clone(), make().map_err(SessionError::Source)?)
            .map_err(source_err)?;
        let stream_id = first.stream_id();
        let unit_crc = match first.current().map_err(source_err)? {
            Some(u) => match format.head(u.bytes, 0).map_err(source_err)? {
                Head::Head(h) => Some(h.profile.crc),
                Head::Need(_) => None,
            },
            None => None,
        };
        let contexts = vec![Context {
            id: 1,
            name: format.context_name(1, None),
        }];
        let name = format.name();
        let mut first = Some(first);
        let arm: ArmFn = Box::new(move |selection, token| {
            if selection != [1] {
                return Err(SessionError::Source(
                    format!("a live stream is one context (1); {selection:?} were asked for")
                        .into(),
                ));
            }
            let p = match first.take() {
                Some(p) => p,
                None => ReadProducer::new(format.clone(), make().map_err(SessionError::Source)?)
                    .map_err(source_err)?,
            };
            emitter(&format, p, token)
        });
        Ok(Offer {
            format: name,
            streams: Vec::new(),
            contexts,
            stream_id,
            max_unit: MAX_UNIT,
            unit_crc,
            arm,
        })
    }

    /// The offer of the file `open` opens, in the first of `formats` that
    /// recognises its first bytes (else the last of them, whose errors say
    /// what was found).
    pub fn detect(
        formats: &[&dyn SessionFormat],
        mut open: Open,
        safe_every: u64,
    ) -> Result<Offer, SessionError> {
        let mut src = open().map_err(SessionError::Source)?;
        detect_source(formats, &mut *src)
            .map_err(SessionError::Source)?
            .offer(open, safe_every)
    }

    /// The format's short name.
    pub fn format(&self) -> &'static str {
        self.format
    }

    /// The streams of the file (none known ahead for a live stream).
    pub fn streams(&self) -> &[StreamSpan] {
        &self.streams
    }

    /// The contexts offered: one per stream, ids from 1.
    pub fn contexts(&self) -> Vec<Context> {
        self.contexts.clone()
    }

    /// The id that binds tokens to this file (its producer's): what the
    /// sender's HELLO names.
    pub fn stream_id(&self) -> [u8; 16] {
        self.stream_id
    }

    /// The largest unit of the file (at most [`MAX_UNIT`]).
    pub fn max_unit(&self) -> usize {
        self.max_unit
    }

    /// The CRC variant of the file's commands when every stream uses the
    /// same (large DATA frames then take their CRC from their command's).
    pub fn unit_crc(&self) -> Option<CrcVariant> {
        self.unit_crc
    }
}

impl Arm for Offer {
    fn arm(
        &mut self,
        selection: &[u32],
        token: Option<&Token>,
    ) -> Result<Box<dyn Emission>, SessionError> {
        (self.arm)(selection, token)
    }
}

/// The emitter of `p`, from its start or re-armed from `token` (it tells
/// its units apart itself: [`Emission::fill_units`]).
fn emitter<F, P>(format: &F, p: P, token: Option<&Token>) -> Result<Box<dyn Emission>, SessionError>
where
    F: Format + Send + 'static,
    F::Split: Send,
    P: Producer + Send + 'static,
    P::Error: Send + Sync,
{
    let mut emitter = match token {
        Some(t) => Emitter::resume(p, format.split(), t)
            .map_err(|e| ResumeError::TokenRefused(e.into()))?,
        None => Emitter::new(p, format.split()).map_err(source_err)?,
    };
    // The receiver checks every unit, its CRC included, before it takes it
    // (its format's check, `SessionFormat::check`): a command's CRC is
    // checked there, end to end, not also here; except where a DATA frame
    // takes its CRC from the command's (`DERIVED_FROM` bytes and more),
    // checked here in the pass that copies it.
    emitter.set_unchecked_below(crate::framer::DERIVED_FROM);
    Ok(Box::new(emitter))
}

/// A [`Format`] as a session driver takes it, whatever its type: told
/// apart from others by its fixed header, a receiver's check, a sender's
/// offer. Every `Format` is one.
pub trait SessionFormat: Send + Sync {
    /// A short name for messages.
    fn name(&self) -> &'static str;
    /// Its fixed header (the magic it is recognised by).
    fn fixed_header(&self) -> &FixedHeaderFormat;
    /// Whether `head` (the first bytes of an input) starts a stream of it.
    fn recognises(&self, head: &[u8]) -> bool;
    /// A receiver's check of its units.
    fn check(&self) -> Box<dyn Check>;
    /// A sender's offer of the file `open` opens
    /// ([`Offer::new`]).
    fn offer(&self, open: Open, safe_every: u64) -> Result<Offer, SessionError>;
    /// A sender's offer of a stream made as it is read ([`Offer::live`]).
    fn live(&self, make: MakeStream) -> Result<Offer, SessionError>;
    /// A receiver's check that has seen the first `len` bytes of `src`
    /// (whole units, as a receiver that restarted kept them): each unit
    /// checked again, so that the check goes on from there and a damaged
    /// kept prefix is an error, not part of the output.
    fn revalidate(&self, src: BoxSource, len: u64) -> Result<Box<dyn Check>, BoxError>;
    /// A receiver's check that continues from `state`, kept with the units
    /// of `src` it covers: only the header of the stream being received is
    /// read again (for its profile), nothing else is checked again.
    fn resume_check(
        &self,
        state: ValidatorState,
        src: BoxSource,
    ) -> Result<Box<dyn Check>, BoxError>;
}

impl<F> SessionFormat for F
where
    F: Format + Send + Sync + 'static,
    F::Split: Send,
{
    fn name(&self) -> &'static str {
        Format::name(self)
    }
    fn fixed_header(&self) -> &FixedHeaderFormat {
        Format::fixed_header(self)
    }
    fn recognises(&self, head: &[u8]) -> bool {
        Format::recognises(self, head)
    }
    fn check(&self) -> Box<dyn Check> {
        Box::new(self.validator())
    }
    fn offer(&self, open: Open, safe_every: u64) -> Result<Offer, SessionError> {
        Offer::new(self.clone(), open, safe_every)
    }
    fn live(&self, make: MakeStream) -> Result<Offer, SessionError> {
        Offer::live(self.clone(), make)
    }
    fn resume_check(
        &self,
        state: ValidatorState,
        mut src: BoxSource,
    ) -> Result<Box<dyn Check>, BoxError> {
        let header = match state.head {
            Some((at, len)) => src.read_at(at, len as usize)?.to_vec(),
            None => Vec::new(),
        };
        Ok(Box::new(Validator::resume(self.clone(), state, &header)?))
    }
    fn revalidate(&self, src: BoxSource, len: u64) -> Result<Box<dyn Check>, BoxError> {
        let mut check = self.validator();
        let mut units = self.units(src);
        while check.offset() < len {
            let unit = units.current()?.ok_or(KeptPrefix {
                offset: check.offset(),
                len,
            })?;
            if check.offset() + unit.bytes.len() as u64 > len {
                return Err(KeptPrefix {
                    offset: check.offset(),
                    len,
                }
                .into());
            }
            check.unit(unit.bytes)?;
            units.advance()?;
        }
        Ok(Box::new(check))
    }
}

/// A kept prefix does not end on a unit boundary (or ends early).
#[derive(Debug, thiserror::Error)]
#[error("the kept prefix of {len} bytes does not end on a unit boundary (the unit at byte {offset} runs past it)")]
pub struct KeptPrefix {
    /// Where the unit that runs past the prefix starts.
    pub offset: u64,
    /// The prefix's length.
    pub len: u64,
}

/// The first of `formats` that recognises `head`, else the last one (whose
/// errors then say what was found instead of its magic); `None` only when
/// `formats` is empty.
pub fn detect<'a>(formats: &[&'a dyn SessionFormat], head: &[u8]) -> Option<&'a dyn SessionFormat> {
    formats
        .iter()
        .find(|f| f.recognises(head))
        .or(formats.last())
        .copied()
}

/// The format of the stream `src` holds, as [`detect`] tells it from its
/// first bytes (as many as the longest magic of `formats`). An error when
/// `formats` is empty or `src` cannot be read.
pub fn detect_source<'a>(
    formats: &[&'a dyn SessionFormat],
    src: &mut dyn Source,
) -> Result<&'a dyn SessionFormat, BoxError> {
    let longest = formats
        .iter()
        .map(|f| f.fixed_header().magic.len())
        .max()
        .ok_or(NoFormat)?;
    let n = src.len().min(longest as u64) as usize;
    let head = src.read_at(0, n)?;
    Ok(detect(formats, head).ok_or(NoFormat)?)
}

/// A receiver's check that takes a stream of any of several formats: the
/// first unit (a stream header) picks the format, as [`detect`] does.
pub struct Detect {
    formats: Vec<&'static dyn SessionFormat>,
    chosen: Option<Box<dyn Check>>,
}

impl Detect {
    /// A check of streams of any of `formats` (the last one is the
    /// fallback: its errors name what was found).
    pub fn new(formats: &[&'static dyn SessionFormat]) -> Detect {
        Detect {
            formats: formats.to_vec(),
            chosen: None,
        }
    }
}

impl std::fmt::Debug for Detect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detect")
            .field(
                "formats",
                &self.formats.iter().map(|f| f.name()).collect::<Vec<_>>(),
            )
            .field("chosen", &self.chosen.is_some())
            .finish()
    }
}

impl Check for Detect {
    fn unit(&mut self, unit: &[u8]) -> Result<(), BoxError> {
        if self.chosen.is_none() {
            let f = detect(&self.formats, unit).ok_or(NoFormat)?;
            self.chosen = Some(f.check());
        }
        match &mut self.chosen {
            Some(c) => c.unit(unit),
            None => Err(NoFormat.into()),
        }
    }
    fn finish(&self) -> Result<(), BoxError> {
        match (&self.chosen, self.formats.last()) {
            (Some(c), _) => c.finish(),
            // Nothing arrived: the fallback says what is missing.
            (None, Some(f)) => f.check().finish(),
            (None, None) => Err(NoFormat.into()),
        }
    }
    fn unit_crc(&self) -> Option<CrcVariant> {
        self.chosen.as_ref().and_then(|c| c.unit_crc())
    }
    fn state(&self) -> Option<ValidatorState> {
        self.chosen.as_ref().and_then(|c| c.state())
    }
}

/// A [`Detect`] made with no format at all.
#[derive(Debug, thiserror::Error)]
#[error("no stream format to check the stream against")]
pub struct NoFormat;

/// The source stream failed (its own error kept).
fn source_err(e: impl Into<BoxError>) -> SessionError {
    SessionError::Source(e.into())
}
