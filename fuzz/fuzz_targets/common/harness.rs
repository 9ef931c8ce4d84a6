//! `target!`, what every fuzz target is written with: the target's body
//! becomes `run_bytes(&[u8])` (a typed input is made from the bytes as
//! `libfuzzer_sys::fuzz_target!` makes it: `Arbitrary::arbitrary_take_rest`,
//! inputs too short for its size hint or that it cannot build skipped), so
//! that the same body runs three ways:
//!
//! - under `cargo fuzz` (`--cfg fuzzing`): the libFuzzer entry point;
//! - as a plain program on stable (`cargo run --bin T -- FILE...`): each
//!   file is one input, run once;
//! - in `cargo test` (`fuzz/tests/regressions.rs` includes every target as
//!   a module): every input saved in `fuzz/regressions/T/` runs as a
//!   stable `#[test]`.

/// See the module documentation.
macro_rules! target {
    (|$data:ident: &[u8]| $body:block) => {
        /// Runs the target's body on one input.
        pub fn run_bytes($data: &[u8]) $body

        #[cfg(fuzzing)]
        libfuzzer_sys::fuzz_target!(|data: &[u8]| run_bytes(data));

        #[cfg(not(fuzzing))]
        #[allow(dead_code)]
        fn main() {
            harness::replay_args(run_bytes);
        }
    };
    (|$input:ident: $ty:ty| $body:block) => {
        /// Runs the target's body on one typed input.
        fn run_typed($input: $ty) $body

        /// Runs the target on one input's bytes, as libFuzzer hands them.
        pub fn run_bytes(data: &[u8]) {
            use arbitrary::Arbitrary;
            if data.len() < <$ty as Arbitrary>::size_hint(0).0 {
                return;
            }
            if let Ok(input) = <$ty as Arbitrary>::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
                run_typed(input);
            }
        }

        #[cfg(fuzzing)]
        libfuzzer_sys::fuzz_target!(|input: $ty| run_typed(input));

        #[cfg(not(fuzzing))]
        #[allow(dead_code)]
        fn main() {
            harness::replay_args(run_bytes);
        }
    };
}

/// Runs `run` once on each file named on the command line.
#[allow(dead_code)]
pub fn replay_args(run: fn(&[u8])) {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: TARGET FILE... (each file is one input; built without --cfg fuzzing, this binary only replays)");
        std::process::exit(2);
    }
    for f in files {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        run(&data);
        eprintln!("{f}: ok");
    }
}
