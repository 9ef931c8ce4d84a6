//! Inputs that the `checkpoint_*` fuzz targets found, as plain tests, so
//! that stable `cargo test` covers them too. Each names the file under
//! `fuzz/regressions/<target>/` that the fuzz smoke run replays; the fuzz
//! inputs are structured (`arbitrary`), so the input is written out here.

use proto_checkpoint::{
    CommandsError, CommandsProducer, DataSplit, EmitError, Emitter, Token, TokenError,
};
use proto_tlv::{encode_command, CrcVariant, ErrorKind, Profile};

const WRITE: DataSplit = DataSplit {
    cmd: 15,
    offset_attr: 18,
    data_attr: 19,
    path_attr: Some(15),
};

/// `fuzz/regressions/checkpoint_resume/final-token-after-end-with-trailing-bytes`:
/// a stream that is only END, followed by one byte, safe points at every
/// command. The producer stopped at END and ignored the byte, and the token
/// of that last fill held an "ended" producer state short of the end of the
/// input, which `CommandsProducer::restore` refused: the emitter's own token
/// did not re-arm it. Bytes after END are now an error (`TrailingData`, at
/// the byte after END), as in every decoder of the kit; the fill fails, and
/// the token of the last good fill (the start) still re-arms.
#[test]
fn final_token_after_end_with_trailing_bytes_rearms() {
    let profile = Profile {
        crc: CrcVariant::Standard,
        max_payload_len: 65536,
        unbounded_data_attr: Some(19),
        end_cmd: 21,
    };
    let mut stream = Vec::new();
    encode_command(&profile, 21, &[], &mut stream).unwrap();
    stream.push(0);
    let id = *b"checkpoint-fuzz!";
    let producer = || CommandsProducer::new(&stream, profile, id, 1);

    let mut e = Emitter::new(producer(), WRITE).unwrap();
    let start = e.token();
    let mut buf = [0u8; 4096];
    let trailing = |r: Result<proto_checkpoint::Fill, EmitError<CommandsError>>| match r {
        Err(EmitError::Producer(CommandsError::Tlv(t))) => {
            assert_eq!(t.kind, ErrorKind::TrailingData { len: 1 });
            assert_eq!((t.index, t.offset), (1, 10));
        }
        other => panic!("{other:?}"),
    };
    trailing(e.fill(&mut buf));
    assert_eq!(e.token(), start, "the failed fill moved the token");
    assert!(matches!(
        e.fill(&mut buf),
        Err(EmitError::Failed { seq: 1 })
    ));

    let t: Token = start.to_text().unwrap().parse().unwrap();
    let mut e = Emitter::resume(producer(), WRITE, &t)
        .unwrap_or_else(|err| panic!("the emitter's own token is refused: {err}"));
    trailing(e.fill(&mut buf));
}

/// `fuzz/regressions/checkpoint_token/too-long-text-position-beyond-multibyte-text`:
/// `pstoken:` and 1982 times U+FFE0 (3 bytes each): more bytes than any
/// token's text, but fewer characters. The "longer than any token" error
/// named character 8 + 5548, past the end of the 1990-character text;
/// positions are characters, and the first bad one is the first U+FFE0.
#[test]
fn too_long_text_position_inside_multibyte_text() {
    let text = format!("pstoken:{}", "\u{FFE0}".repeat(1982));
    assert!(text.len() > 8 + 5548);
    match Token::from_text(&text) {
        Err(TokenError::BadText { position, why }) => {
            assert!(position <= text.chars().count(), "{position}: {why}");
            assert_eq!((position, why), (8, "not a base64url character"));
        }
        other => panic!("{other:?}"),
    }
    // Long in characters too: refused at the first character past the limit.
    let text = format!("pstoken:{}", "A".repeat(6000));
    match Token::from_text(&text) {
        Err(TokenError::BadText { position, why }) => {
            assert_eq!((position, why), (8 + 5548, "longer than any token"))
        }
        other => panic!("{other:?}"),
    }
}
