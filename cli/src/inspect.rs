//! `inspect`: the front of a native or btrfs stream.

use std::io::{self, Write};
use std::path::Path;

use proto_stream::btrfs::SUPPORTED_VERSIONS;
use proto_stream::header::{negotiate, Endian, BTRFS};
use proto_stream::native::{Reader, NATIVE_MAGIC};
use serde_json::{json, Value};

use crate::input::{sniff, Opened};
use crate::native::CLI_OPTIONS;
use crate::Failure;

/// Prints the fixed header, the chosen version and the version-specific
/// header (features, contexts) of `path`, as text or JSON.
pub fn inspect(path: &Path, json: bool) -> Result<(), Failure> {
    let (head, Opened { reader: input, .. }) = sniff(path, BTRFS.encoded_len())?;
    let v = if head.starts_with(NATIVE_MAGIC) {
        let r = Reader::new(input, CLI_OPTIONS)?;
        let h = r.header();
        json!({
            "format": "native",
            "magic": NATIVE_MAGIC.escape_ascii().to_string(),
            "version": r.fixed().version,
            "compat_version": r.fixed().compat_version,
            "chosen_version": r.version(),
            "header_len": r.header_len(),
            "version_header": {
                "endian": match h.byte_order { Endian::Big => "big", Endian::Little => "little" },
                "features_supported": format!("{:#018x}", h.features_supported),
                "features_required": format!("{:#018x}", h.features_required),
                "stream_id": proto_stream::header::stream_id_hex(&h.stream_id),
                "contexts": h.contexts.iter().map(|c| json!({"id": c.id, "name": c.name})).collect::<Vec<_>>(),
            },
        })
    } else {
        let fixed = BTRFS.parse(&head).map_err(Failure::Header)?;
        let chosen = negotiate(&SUPPORTED_VERSIONS, fixed.range()).map_err(Failure::Header)?;
        json!({
            "format": "btrfs",
            "magic": BTRFS.magic.escape_ascii().to_string(),
            "version": fixed.version,
            "compat_version": fixed.compat_version,
            "chosen_version": chosen,
            "header_len": fixed.len,
            "version_header": Value::Null,
        })
    };
    let mut out = String::new();
    if json {
        out = format!("{v}\n");
    } else {
        let line = |out: &mut String, k: &str, val: &Value| {
            let s = match val {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            out.push_str(&format!("{k}: {s}\n"));
        };
        line(&mut out, "format", &v["format"]);
        out.push_str(&format!(
            "magic: \"{}\"\n",
            v["magic"].as_str().unwrap_or("")
        ));
        line(&mut out, "version", &v["version"]);
        if v["format"] == "btrfs" {
            out.push_str(&format!(
                "compat_version: {} (no compat field: the version itself)\n",
                v["compat_version"]
            ));
        } else {
            line(&mut out, "compat_version", &v["compat_version"]);
        }
        line(&mut out, "chosen version", &v["chosen_version"]);
        line(&mut out, "header length", &v["header_len"]);
        let h = &v["version_header"];
        if h.is_null() {
            out.push_str("version header: none (no version-specific header)\n");
        } else {
            line(&mut out, "endian", &h["endian"]);
            line(&mut out, "features supported", &h["features_supported"]);
            line(&mut out, "features required", &h["features_required"]);
            line(&mut out, "stream id", &h["stream_id"]);
            let ctx: Vec<String> = h["contexts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| format!("{}={}", c["id"], c["name"].as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "contexts: {}\n",
                if ctx.is_empty() {
                    "none".into()
                } else {
                    ctx.join(", ")
                }
            ));
        }
    }
    let _ = io::stdout().write_all(out.as_bytes());
    Ok(())
}
