//! `offer`: formats told apart by their magic, on the sending side
//! (`Offer::detect`) and the receiving side (`Detect`), for two native
//! formats that differ only in magic and END type; an offer arms emitters
//! of a selection from the start and from a token.

use std::sync::Arc;

use proto_checkpoint::native::{NativeFormat, Writer, PRSTREAM};
use proto_checkpoint::{Fill, Token};
use proto_header::{Endian, FixedHeaderFormat, V1Header, KIT_VERSIONS};
use proto_session::offer::{detect, BoxSource, Detect, Offer, Open, SessionFormat};
use proto_session::receive::Check;
use proto_session::send::Arm;
use proto_session::SessionError;
use proto_tlv::{AttrValue, CrcVariant, Value};

const DEVICE: NativeFormat = NativeFormat {
    name: "device",
    fixed: FixedHeaderFormat::native(b"DEVSTATE"),
    versions: &KIT_VERSIONS,
    profile: proto_tlv::Profile {
        end_cmd: 0x00FF,
        ..PRSTREAM.profile
    },
    split: None,
    known_features: 0,
};

/// A stream of `format` with `n` small commands.
fn stream(format: &NativeFormat, n: usize) -> Vec<u8> {
    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: [3; 16],
        contexts: Vec::new(),
    };
    let entry = KIT_VERSIONS.entry(1).unwrap();
    let mut w = Writer::with_format(format, Vec::new(), entry, 1, &header).unwrap();
    for i in 0..n {
        let body = format!("command {i}");
        w.write_command(1, &[AttrValue::new(1, Value::Bytes(body.as_bytes()))])
            .unwrap();
    }
    w.finish().unwrap()
}

fn open(bytes: &[u8]) -> Open {
    let bytes: Arc<[u8]> = bytes.into();
    Box::new(move || Ok(Box::new(bytes.clone()) as BoxSource))
}

/// Every unit an emitter gives, one per fill.
fn units(e: &mut dyn proto_session::send::Emission, max: usize) -> Vec<u8> {
    e.set_units_per_fill(1);
    let mut out = Vec::new();
    let mut buf = vec![0u8; max];
    loop {
        let Fill { written, ended, .. } = e.fill(&mut buf).unwrap();
        out.extend_from_slice(&buf[..written]);
        if ended || written == 0 {
            return out;
        }
    }
}

static BOTH: [&dyn SessionFormat; 2] = [&DEVICE, &PRSTREAM];

#[test]
fn detect_picks_by_magic_and_falls_back_to_the_last() {
    let dev = stream(&DEVICE, 3);
    let kit = stream(&PRSTREAM, 3);
    assert_eq!(detect(&BOTH, &dev).unwrap().name(), "device");
    assert_eq!(detect(&BOTH, &kit).unwrap().name(), "native");
    // Neither magic: the last format, whose errors say what was found.
    assert_eq!(detect(&BOTH, b"garbage!").unwrap().name(), "native");
    assert!(detect(&[], &kit).is_none());
}

#[test]
fn an_offer_in_the_detected_format_replays_the_file() {
    for (format, bytes) in [
        ("device", stream(&DEVICE, 40)),
        ("native", stream(&PRSTREAM, 40)),
    ] {
        let mut offer = Offer::detect(&BOTH, open(&bytes), 4).unwrap();
        assert_eq!(offer.format(), format);
        assert_eq!(offer.contexts().len(), 1);
        // The id binding tokens to this file (not the header's own id).
        let twin = if format == "device" {
            &PRSTREAM
        } else {
            &DEVICE
        };
        let twin = Offer::new(*twin, open(&stream(twin, 40)), 4).unwrap();
        assert_ne!(offer.stream_id(), twin.stream_id());
        assert_eq!(offer.unit_crc(), Some(CrcVariant::Standard));
        assert!(offer.max_unit() < 100, "{}", offer.max_unit());
        let max = offer.max_unit();

        // From the start: the file itself.
        let mut e = offer.arm(&[1], None).unwrap();
        assert_eq!(units(&mut *e, max), bytes);

        // From a token taken part way: the rest of it.
        let mut e = offer.arm(&[1], None).unwrap();
        e.set_units_per_fill(1);
        let mut buf = vec![0u8; max];
        let mut head = Vec::new();
        for _ in 0..17 {
            let w = e.fill(&mut buf).unwrap().written;
            head.extend_from_slice(&buf[..w]);
        }
        let token = Token::from_bytes(&e.token().to_bytes().unwrap()).unwrap();
        let mut resumed = offer.arm(&[1], Some(&token)).unwrap();
        head.extend(units(&mut *resumed, max));
        assert_eq!(head, bytes);

        // A token of the other format's stream is refused, typed.
        let other = if format == "device" {
            stream(&PRSTREAM, 40)
        } else {
            stream(&DEVICE, 40)
        };
        let mut o = Offer::detect(&BOTH, open(&other), 4).unwrap();
        let mut e = o.arm(&[1], None).unwrap();
        e.fill(&mut buf).unwrap();
        let foreign = e.token();
        match offer.arm(&[1], Some(&foreign)) {
            Err(SessionError::Resume(_)) => {}
            Err(e) => panic!("{format}: another stream's token: {e}"),
            Ok(_) => panic!("{format}: another stream's token was taken"),
        }
    }
}

#[test]
fn no_format_is_an_error_not_a_panic() {
    let bytes = stream(&PRSTREAM, 1);
    match Offer::detect(&[], open(&bytes), 1) {
        Err(SessionError::Source(e)) => assert!(e.to_string().contains("no stream format")),
        other => panic!("{other:?}"),
    }
    let mut d = Detect::new(&[]);
    assert!(d.unit(&bytes).is_err());
    assert!(d.finish().is_err());
}

#[test]
fn detect_checks_each_stream_in_its_own_format() {
    for bytes in [stream(&DEVICE, 5), stream(&PRSTREAM, 5)] {
        let spans = {
            let f = detect(&BOTH, &bytes).unwrap();
            let mut o = f.offer(open(&bytes), 1).unwrap();
            let max = o.max_unit();
            let mut e = o.arm(&[1], None).unwrap();
            e.set_units_per_fill(1);
            let mut units = Vec::new();
            let mut buf = vec![0u8; max];
            loop {
                let fill = e.fill(&mut buf).unwrap();
                units.push(buf[..fill.written].to_vec());
                if fill.ended {
                    break units;
                }
            }
        };
        let mut d = Detect::new(&BOTH);
        // Before the header, nothing is known of the commands' CRC.
        assert_eq!(d.unit_crc(), None);
        d.unit(&spans[0]).unwrap();
        // The header names the stream's profile.
        assert_eq!(d.unit_crc(), Some(CrcVariant::Standard));
        for u in &spans[1..] {
            d.unit(u).unwrap();
        }
        d.finish().unwrap();

        // The same units with the last (END) missing do not finish.
        let mut d = Detect::new(&BOTH);
        for u in &spans[..spans.len() - 1] {
            d.unit(u).unwrap();
        }
        assert!(d.finish().is_err());
    }
    // A stream of neither format fails in the fallback's terms, naming
    // its magic.
    let mut d = Detect::new(&BOTH);
    let e = d
        .unit(
            &[
                b"NOTMAGIC".as_slice(),
                &[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            ]
            .concat(),
        )
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("magic"), "{e}");
}

/// An emission that fails its first batched fill after the emitter has
/// moved past the units (as a fill that split a command would).
struct FailsFirstBatch {
    inner: Box<dyn proto_session::send::Emission>,
    failed: bool,
}

impl proto_session::send::Emission for FailsFirstBatch {
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, proto_session::BoxError> {
        self.inner.fill(buf)
    }
    fn token(&self) -> Token {
        self.inner.token()
    }
    fn ended(&self) -> bool {
        self.inner.ended()
    }
    fn set_units_per_fill(&mut self, n: u64) {
        self.inner.set_units_per_fill(n)
    }
    fn fill_units(
        &mut self,
        buf: &mut [u8],
        max: u64,
        lens: &mut Vec<usize>,
    ) -> Result<Fill, proto_session::BoxError> {
        let f = self.inner.fill_units(buf, max, lens)?;
        if !self.failed {
            self.failed = true;
            lens.clear();
            return Err("a batch that could not be taken".into());
        }
        Ok(f)
    }
}

#[test]
fn a_sender_whose_fill_failed_is_not_resumed_by_seq() {
    use proto_session::framer::Framer;
    use proto_session::handshake::Select;
    use proto_session::replay::Limits;
    use proto_session::send::{Emission, SendConfig, Sending};
    use proto_session::wire::Resumed;

    let bytes = stream(&PRSTREAM, 40);
    let mut offer = Offer::new(PRSTREAM, open(&bytes), 1).unwrap();
    let max_unit = offer.max_unit();
    let mut armed = 0;
    let mut arm = |sel: &[u32], token: Option<&Token>| {
        armed += 1;
        let inner = offer.arm(sel, token)?;
        Ok(Box::new(FailsFirstBatch {
            inner,
            failed: armed > 1,
        }) as Box<dyn Emission>)
    };
    let window = Limits {
        max_bytes: 1 << 20,
        max_messages: 1024,
    };
    let config = SendConfig {
        token_every: u64::MAX,
        max_unit,
        unit_crc: Some(CrcVariant::Standard),
        compress: false,
    };
    let mut sending = Sending::new(window, config);
    let select = |instance| Select {
        contexts: vec![1],
        received: 0,
        instance,
        token: None,
    };
    let accept = sending.resume(&select([0; 16]), [9; 16], &mut arm).unwrap();
    assert_eq!(accept.resumed, Resumed::Fresh as u8);
    let mut f = Framer::new();
    let err = sending.poll(&mut f).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("could not be taken"), "{err}");
    // The emitter moved past units the window never took: the transfer is
    // gone, not resumed by seq on the next connection.
    assert!(sending.poll(&mut Framer::new()).is_err());
    let again = sending
        .resume(&select([9; 16]), [10; 16], &mut arm)
        .unwrap();
    assert_ne!(
        again.resumed,
        Resumed::Seq as u8,
        "resumed by seq past lost units"
    );
    assert_eq!(armed, 2, "armed again");
    // And the new transfer sends from the first unit.
    let mut f = Framer::new();
    match sending.poll(&mut f).unwrap() {
        proto_session::send::Step::Data { seq, .. } => assert_eq!(seq, 1),
        other => panic!("{other:?}"),
    }
}
