//! `encoded_write`: data as btrfs stores it on disk (compressed), written
//! decompressed, as btrfs-progs does when it cannot pass it through.

/// The largest extent accepted (btrfs makes at most 128 KiB per extent).
const MAX_UNENCODED: u64 = 8 << 20;

/// `BTRFS_ENCODED_IO_COMPRESSION_*`.
const NONE: u32 = 0;
const ZLIB: u32 = 1;
const ZSTD: u32 = 2;
const LZO_4K: u32 = 3;
const LZO_64K: u32 = 7;

/// The bytes to write: the extent decompressed into `buf` (`unencoded_len`
/// bytes), then `unencoded_file_len` bytes from `unencoded_offset`.
pub(super) fn decode<'b>(
    compression: u32,
    data: &[u8],
    unencoded_len: u64,
    unencoded_offset: u64,
    unencoded_file_len: u64,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8], String> {
    if unencoded_len > MAX_UNENCODED {
        return Err(format!(
            "unencoded_len {unencoded_len} is larger than {MAX_UNENCODED}"
        ));
    }
    let end = unencoded_offset
        .checked_add(unencoded_file_len)
        .filter(|&e| e <= unencoded_len)
        .ok_or_else(|| {
            format!(
                "unencoded_offset {unencoded_offset} + unencoded_file_len {unencoded_file_len} is beyond unencoded_len {unencoded_len}"
            )
        })?;
    buf.clear();
    buf.resize(unencoded_len as usize, 0);
    match compression {
        NONE => {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
        }
        ZLIB => {
            let mut z = flate2::Decompress::new(true);
            z.decompress(data, buf, flate2::FlushDecompress::Finish)
                .map_err(|e| format!("zlib data does not decompress: {e}"))?;
        }
        ZSTD => {
            // One frame; btrfs pads the data to its sector size after it.
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| format!("zstd: {e}"))?
                .single_frame();
            // btrfs compresses with windows of at most 128 KiB: a frame
            // that asks for more is refused, not given its memory.
            d.window_log_max(17).map_err(|e| format!("zstd: {e}"))?;
            let mut n = 0;
            while n < buf.len() {
                match std::io::Read::read(&mut d, &mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(format!("zstd data does not decompress: {e}")),
                }
            }
        }
        LZO_4K..=LZO_64K => lzo_segments(data, buf, 1 << (compression - LZO_4K + 12))?,
        other => return Err(format!("unknown compression {other}")),
    }
    Ok(&buf[unencoded_offset as usize..end as usize])
}

/// btrfs's LZO format (fs/btrfs/lzo.c, read as btrfs-progs reads it): the
/// total length (u32 LE), then one segment per sector of output, each its
/// length (u32 LE) and LZO1X data; a segment header never straddles a
/// sector of the input (the rest of the sector is padding then).
fn lzo_segments(data: &[u8], out: &mut [u8], sector: usize) -> Result<(), String> {
    let word = |at: usize| -> Option<usize> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let total = word(0).ok_or("lzo header is truncated")?;
    if total > data.len() {
        return Err(format!(
            "lzo header says {total} bytes, the data has {}",
            data.len()
        ));
    }
    let (mut at, mut put) = (4usize, 0usize);
    while at < total && put < out.len() {
        let left_in_sector = (sector - at % sector) % sector;
        if left_in_sector < 4 {
            if total - at <= left_in_sector {
                break;
            }
            at += left_in_sector;
        }
        let len = word(at)
            .filter(|_| total - at >= 4)
            .ok_or("lzo segment header is truncated")?;
        at += 4;
        if len > total - at {
            return Err(format!(
                "lzo segment of {len} bytes at {at} runs past the data"
            ));
        }
        let room = (out.len() - put).min(sector);
        let n = lzo::decompress_into(&data[at..at + len], &mut out[put..put + room])
            .map_err(|e| format!("lzo segment at {at} does not decompress: {e}"))?;
        at += len;
        put += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zlib_and_zstd_round_trip() {
        let plain: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&plain).unwrap();
        let zl = z.finish().unwrap();
        let zs = zstd::bulk::compress(&plain, 3).unwrap();
        let mut buf = Vec::new();
        // btrfs pads compressed extents to a sector.
        let mut padded = zs.clone();
        padded.resize(zs.len().next_multiple_of(4096), 0);
        for (c, data) in [(ZLIB, &zl), (ZSTD, &zs), (ZSTD, &padded)] {
            // An extent of 24 KiB whose file part is bytes 100..15100.
            let got = decode(c, data, 24576, 100, 15000, &mut buf).unwrap();
            assert_eq!(got, &plain[100..15100], "compression {c}");
        }
        assert!(decode(ZSTD, b"not zstd", 4096, 0, 4096, &mut buf).is_err());
        assert!(decode(ZLIB, &zl, 4096, 4000, 100, &mut buf).is_err());
        assert!(decode(9, &zl, 4096, 0, 10, &mut buf).is_err());
        // lzo: damaged or cut data is an error, never a panic.
        for cut in [0, 3, 4, 7, 9] {
            assert!(decode(
                LZO_4K,
                &[9, 0, 0, 0, 5, 0, 0, 0, 1][..cut],
                4096,
                0,
                10,
                &mut buf
            )
            .is_err());
        }
        assert!(decode(ZLIB, &zl, 1 << 40, 0, 10, &mut buf).is_err());
    }
}
