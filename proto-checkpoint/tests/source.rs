//! `FileSource` and `Spans` read exactly the bytes a slice of the same
//! stream holds, whatever the order of reads, over readers that return
//! short and interrupted reads.

mod support;

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use proptest::prelude::*;
use proto_checkpoint::{FileSource, Source, Spans, READ_AHEAD};
use support::config;

/// A `Read + Seek` that returns at most `max` bytes per read, and an
/// `Interrupted` error before every `every`-th read (0: none; 1 would
/// interrupt every read forever, so it is not generated).
struct Stingy {
    inner: Cursor<Vec<u8>>,
    max: usize,
    every: usize,
    reads: usize,
}

impl Read for Stingy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.every > 0 && self.reads.is_multiple_of(self.every) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.max);
        self.inner.read(&mut buf[..n])
    }
}

impl Seek for Stingy {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Reads: (offset as a fraction of the length, length).
fn reads() -> impl Strategy<Value = Vec<(f64, usize)>> {
    prop::collection::vec(
        (
            0.0..1.0f64,
            prop_oneof![0..64usize, 0..70_000usize, Just(READ_AHEAD + 3)],
        ),
        1..40,
    )
}

proptest! {
    #![proptest_config(config(100))]

    /// Every read within the stream gives the slice's bytes; one that runs
    /// past the end is `UnexpectedEof`, and the source goes on working.
    #[test]
    fn file_source_reads_what_a_slice_holds(
        len in prop_oneof![0..5000usize, 0..(3 * READ_AHEAD)],
        max in prop_oneof![Just(usize::MAX), 1..64usize, 4096..70_000usize],
        every in prop_oneof![Just(0usize), 2..5usize],
        reads in reads(),
        sequential in any::<bool>(),
    ) {
        // Reads of a few bytes over small files only (time).
        let max = if len > 5000 && max < 64 { max * 1000 } else { max };
        let data = bytes(len);
        let inner = Stingy { inner: Cursor::new(data.clone()), max, every, reads: 0 };
        let mut src = FileSource::new(inner).unwrap();
        prop_assert_eq!(src.len(), len as u64);
        let mut next = 0u64;
        for (at, n) in reads {
            let offset = if sequential { next } else { (at * len as f64) as u64 };
            match src.read_at(offset, n) {
                Ok(got) => {
                    let end = offset as usize + n;
                    prop_assert!(end <= len);
                    prop_assert!(got == &data[offset as usize..end], "{offset}+{n}");
                    next = end as u64;
                }
                Err(e) => {
                    prop_assert!(offset + n as u64 > len as u64, "{offset}+{n}: {e}");
                    prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    next = 0;
                }
            }
        }
    }

    /// Spans over a file source read the ranges' bytes in order, across
    /// range boundaries too.
    #[test]
    fn spans_read_their_ranges(
        len in 1..20_000usize,
        cuts in prop::collection::vec((0.0..1.0f64, 0.0..1.0f64), 1..6),
        reads in reads(),
    ) {
        let data = bytes(len);
        let ranges: Vec<(u64, u64)> = cuts
            .iter()
            .map(|&(a, b)| {
                let off = (a * len as f64) as u64;
                (off, ((len as u64 - off) as f64 * b) as u64)
            })
            .collect();
        let joined: Vec<u8> = ranges
            .iter()
            .flat_map(|&(o, l)| data[o as usize..(o + l) as usize].to_vec())
            .collect();
        let inner = Stingy { inner: Cursor::new(data), max: 999, every: 3, reads: 0 };
        let mut spans = Spans::new(FileSource::new(inner).unwrap(), &ranges).unwrap();
        prop_assert_eq!(spans.len(), joined.len() as u64);
        for (at, n) in reads {
            let offset = (at * joined.len() as f64) as u64;
            let want = joined.get(offset as usize..offset as usize + n);
            match (spans.read_at(offset, n), want) {
                (Ok(got), Some(w)) => prop_assert!(got == w, "{offset}+{n}"),
                (Err(e), None) => prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                (got, want) => prop_assert!(false, "{offset}+{n}: {got:?} against {want:?}"),
            }
        }
    }
}

/// A file that shrank after it was opened is an error, not a short slice.
#[test]
fn a_file_that_shrank_is_an_error() {
    // A reader whose length, as seeking to its end finds it, is longer
    // than what it holds.
    struct Short(Cursor<Vec<u8>>);
    impl Read for Short {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Seek for Short {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            // Claims 10,000 bytes; holds 100.
            match to {
                SeekFrom::End(0) => Ok(10_000),
                other => self.0.seek(other),
            }
        }
    }
    let mut short = FileSource::new(Short(Cursor::new(bytes(100)))).unwrap();
    assert_eq!(short.len(), 10_000);
    let e = short.read_at(50, 500).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(short.read_at(10, 20).unwrap(), &bytes(100)[10..30]);
}

/// `contiguous` says how far a read goes without joining ranges: to the
/// end of the range an offset lies in (to the end for a plain source).
#[test]
fn contiguous_stops_at_the_end_of_a_range() {
    let data = bytes(20);
    let spans = Spans::new(&data[..], &[(10, 5), (0, 3), (15, 5)]).unwrap();
    let got: Vec<u64> = (0..14).map(|o| spans.contiguous(o)).collect();
    assert_eq!(got, [5, 4, 3, 2, 1, 3, 2, 1, 5, 4, 3, 2, 1, 0]);
    assert_eq!((&data[..]).contiguous(7), 13);
    assert_eq!((&data[..]).contiguous(25), 0);
}
