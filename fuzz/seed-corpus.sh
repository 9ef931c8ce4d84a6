#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (or $CORPUS/<target>/) with seeds cut from
# real btrfs send streams and other shipped inputs.
#
#   fuzz/seed-corpus.sh [TARGET...]      (default: tlv_decode tlv_roundtrip btrfs_dump)
#
# The committed corpus (fuzz/corpus/<target>/, grown from these seeds, see
# README.md) is what the fuzzers start from; this script is for seeding
# again (update-corpus.sh with SEED=1 seeds into fuzz/new-corpus/).
#
# Streams are taken from testdata/btrfs/*.stream, testdata/btrfs/small/ and,
# when present, from ../shared/fixtures/btrfs/*.stream next to the repository
# (override the list of directories with FIXTURE_DIRS="dir1 dir2").
#
# - tlv_decode: the bytes after the 17-byte stream header, cut at command
#   boundaries into pieces of at most MAX_SEED bytes (default 8 KiB; the
#   decoders' paths do not depend on how long a write's data is). A command
#   larger than that, such as a 128 KiB v2 write, is a piece of its own, but
#   only the first of its command type in each stream.
# - btrfs_dump: one version byte (version - 1; the target maps it back to
#   1..=3) then the same pieces; plus prefixes of the first commands, cuts
#   inside a command header and payload, trailing garbage after END, and two
#   concatenated streams.
# - tlv_roundtrip, header_fixed, header_version, header_negotiate,
#   header_contexts: no file seeds (the directory is made).
# - native_reader: testdata/native/sample-v1.stream without its magic.
# - checkpoint_format: a mode byte then a shipped stream of at most 32 KiB,
#   or one without its commands larger than MAX_SEED (so with END).
# - checkpoint_token: four valid checkpoint tokens (at the start, inside a
#   split write, at the end, with no producer state), each as its text form
#   and as its bytes (the target reads every input as both, raw).
# - checkpoint_resume, checkpoint_compare, session_replay, apply_stream: no file seeds
#   (structured inputs; the directory is made).
# - session_handshake: real session transcripts (a mode byte, then what one
#   peer sent), recorded by `cargo run --example session_transcript` in the
#   main workspace: what a fetcher sent to the server (whole transfer, one
#   context selected, a refusal, a resume from a checkpoint token) and what
#   the server sent to the fetcher.
# - session_pair: fault plans (clean, drops, drops with a sender that
#   forgets, one damaged byte) for both shipped native streams.
#
# Seeds are named after their source, so running the script again rewrites
# the same files.
set -euo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$FUZZ_DIR/.." && pwd)
CORPUS=${CORPUS:-$FUZZ_DIR/corpus}
MAX_SEED=${MAX_SEED:-8192}
HDR=17
FIXTURE_DIRS=${FIXTURE_DIRS:-"$ROOT/testdata/btrfs $ROOT/testdata/btrfs/small $ROOT/../shared/fixtures/btrfs"}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tlv_decode tlv_roundtrip btrfs_dump)
want() {
    local t
    for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done
    return 1
}
n=0
for t in "${targets[@]}"; do
    case $t in
    tlv_decode | tlv_roundtrip | btrfs_dump) mkdir -p "$CORPUS/$t" ;;
    # Small structured inputs: no file seeds (the directory is made).
    header_fixed | header_version | header_negotiate | header_contexts) mkdir -p "$CORPUS/$t" ;;
    # The shipped native sample, without its 8-byte magic (the target adds it).
    native_reader)
        mkdir -p "$CORPUS/$t"
        tail -c +9 "$ROOT/testdata/native/sample-v1.stream" > "$CORPUS/$t/sample-v1"
        ;;
    checkpoint_token)
        mkdir -p "$CORPUS/$t"
        # name, text form (version 1; CRC-32C over every byte before it).
        while read -r name text; do
            printf '%s\n' "$text" >"$CORPUS/$t/$name.txt"
            # Unpadded base64url -> bytes.
            b64=$(printf '%s' "${text#pstoken:}" | tr -- '-_' '+/')
            while [ $((${#b64} % 4)) -ne 0 ]; do b64="$b64="; done
            printf '%s' "$b64" | base64 -d >"$CORPUS/$t/$name.bin"
            n=$((n + 2))
        done <<'TOKENS'
start pstoken:UgAAAAEAAABjaGVja3BvaW50LWZ1enohAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAASAAAAAQAAAAAAAAAAAAAAAAAAAAAAd1i1Hg
mid-split pstoken:UgAAAAEAAABjaGVja3BvaW50LWZ1enohBQAAAAAAAADSBAAAAAAAAAIAAAAAAAAAZAAAAAAAAAASAAAAAQCEAwAAAAAAAAMAAAAAAAAAreWZ7A
ended pstoken:UgAAAAEAAQBjaGVja3BvaW50LWZ1enohCQAAAAAAAACIEwAAAAAAAAAAAAAAAAAAAAAAAAAAAAASAAAAAQGIEwAAAAAAAAkAAAAAAAAAHxz6Ig
no-state pstoken:QAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAwAAAAAAAAAsAQAAAAAAAAMAAAAAAAAAAAAAAAAAAAAAAAAA9BpGEA
TOKENS
        ;;
    # A mode byte (even: btrfs, odd: native) then a shipped stream of at
    # most 32 KiB (larger ones without their large commands: see below).
    checkpoint_format)
        mkdir -p "$CORPUS/$t"
        for f in "$ROOT"/testdata/btrfs/*.stream "$ROOT"/testdata/btrfs/small/*.stream; do
            [ "$(stat -c %s "$f")" -le 32767 ] || continue
            small=; case $f in */small/*) small=small- ;; esac
            { printf '\x04'; cat "$f"; } >"$CORPUS/$t/btrfs-$small$(basename "$f")"
            n=$((n + 1))
        done
        { printf '\x05'; cat "$ROOT/testdata/native/sample-v1.stream"; } >"$CORPUS/$t/native-sample-v1"
        n=$((n + 1))
        ;;
    # Structured inputs: no file seeds (the directory is made).
    checkpoint_resume | checkpoint_compare | session_replay | apply_stream) mkdir -p "$CORPUS/$t" ;;
    # A seed, two alignments, a cut, then a message: one message across
    # every tier of the kernel (short, 3 x 128-byte lanes, 3 x 8 KiB lanes).
    crc32c_kernels)
        mkdir -p "$CORPUS/$t"
        for len in 0 9 383 384 1000 24576 24999; do
            { printf '\x01\x02\x03\x04\x05\x03\x07'; head -c "$len" /dev/urandom; } >"$CORPUS/$t/len-$len"
            n=$((n + 1))
        done
        ;;
    # Transcripts of real sessions over 127.0.0.1 (see the example).
    session_handshake)
        mkdir -p "$CORPUS/$t"
        cargo run -q --manifest-path "$ROOT/Cargo.toml" --example session_transcript -- "$CORPUS/$t"
        n=$((n + $(find "$CORPUS/$t" -maxdepth 1 -type f \( -name 'server-*' -o -name 'fetcher-*' \) | wc -l)))
        ;;
    # Fault plans (see the target): clean, drops, drops with a sender
    # that forgets, damage; each for both shipped native streams.
    session_pair)
        mkdir -p "$CORPUS/$t"
        #            window 1 MiB  msgs token 64 KiB safe chunk  mask flip
        plan='\x00\x00\x10\x00 \x40 \x00\x00\x01\x00 \x01 \x00\x00'
        for m in 0 1; do
            printf "\x0${m}${plan// /}\x00\x00\x00\x00\x00" >"$CORPUS/$t/clean-$m"
            printf "\x0${m}${plan// /}\x00\x00\x00\x00\x00\x40\x0d\x03\x00" >"$CORPUS/$t/drops-$m"
            printf "\x0${m}${plan// /}\xff\x00\x00\x00\x00\x40\x0d\x03\x00\x10\x27\x00\x00" >"$CORPUS/$t/forget-$m"
            printf "\x0$((m + 2))${plan// /}\x00\xe8\x03\x00\x00" >"$CORPUS/$t/damage-$m"
            n=$((n + 4))
        done
        ;;
    *) echo "seed-corpus.sh: unknown target $t" >&2; exit 2 ;;
    esac
done

u32le() { od -An -tu4 -j "$2" -N 4 "$1" | tr -d ' '; }
# Bytes [start, start+len) of a file.
slice() { dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }
# The version byte of btrfs_dump for protocol version $1.
vbyte() { printf "\\$(printf %03o $(($1 - 1)))"; }

streams=()
for d in $FIXTURE_DIRS; do
    [ -d "$d" ] || continue
    for f in "$d"/*.stream; do
        [ -f "$f" ] && streams+=("$f")
    done
done
if [ ${#streams[@]} -eq 0 ]; then
    echo "seed-corpus.sh: no *.stream fixtures found in: $FIXTURE_DIRS" >&2
    exit 1
fi

for f in "${streams[@]}"; do
    name=$(basename "$f" .stream)
    case $f in */small/*) name=small-$name ;; esac
    size=$(stat -c %s "$f")
    version=$(u32le "$f" 13)

    # Command start offsets (in the file); a final entry at the end of the
    # last whole command.
    offs=()
    pos=$HDR
    while [ $((pos + 10)) -le "$size" ]; do
        offs+=("$pos")
        len=$(u32le "$f" "$pos")
        pos=$((pos + 10 + len))
    done
    [ "$pos" -le "$size" ] || pos=$size
    offs+=("$pos")
    ncmds=$((${#offs[@]} - 1))

    # Command-aligned pieces of at most MAX_SEED bytes; a larger command is
    # a piece of its own, only the first of its type.
    piece=0
    i=0
    big_types=" "
    while [ "$i" -lt "$ncmds" ]; do
        start=${offs[$i]}
        j=$((i + 1))
        while [ "$j" -lt "$ncmds" ] && [ $((offs[j + 1] - start)) -le "$MAX_SEED" ]; do
            j=$((j + 1))
        done
        end=${offs[$j]}
        if [ $((end - start)) -gt "$MAX_SEED" ]; then
            cmd=$(od -An -tu2 -j $((start + 4)) -N 2 "$f" | tr -d ' ')
            case $big_types in *" $cmd "*) i=$j; continue ;; esac
            big_types="$big_types$cmd "
        fi
        tag=$(printf '%s-cmds-%03d-%03d' "$name" "$i" "$j")
        if want tlv_decode; then
            slice "$f" "$start" $((end - start)) >"$CORPUS/tlv_decode/$tag"
            n=$((n + 1))
        fi
        if want btrfs_dump; then
            { vbyte "$version"; slice "$f" "$start" $((end - start)); } >"$CORPUS/btrfs_dump/$tag"
            n=$((n + 1))
        fi
        piece=$((piece + 1))
        i=$j
    done

    # checkpoint_format: the whole stream without its commands larger than
    # MAX_SEED (large writes, cut into many units by the target's small
    # buffers, take the same paths as the writes of a few KiB kept), when
    # that leaves at most 32 KiB.
    if want checkpoint_format && [ "$size" -gt 32767 ]; then
        out=$CORPUS/checkpoint_format/btrfs-$name-no-large
        { printf '\x04'; head -c $HDR "$f"; } >"$out"
        for ((k = 0; k < ncmds; k++)); do
            len=$((offs[k + 1] - offs[k]))
            [ "$len" -le "$MAX_SEED" ] && slice "$f" "${offs[$k]}" "$len" >>"$out"
        done
        if [ "$(stat -c %s "$out")" -le 32768 ]; then n=$((n + 1)); else rm -f "$out"; fi
    fi

    want btrfs_dump || continue
    out=$CORPUS/btrfs_dump
    # The first k whole commands (no END: MissingEnd).
    for k in 1 2 3 5 8; do
        [ "$k" -lt "$ncmds" ] || continue
        len=$((offs[k] - HDR))
        [ "$len" -le "$MAX_SEED" ] || continue
        { vbyte "$version"; slice "$f" $HDR "$len"; } >"$out/$name-first-$k"
        n=$((n + 1))
    done
    # Cuts inside the header and inside the payload of command 1 and 2.
    for k in 1 2; do
        [ "$k" -lt "$ncmds" ] || continue
        for extra in 5 15; do
            len=$((offs[k] - HDR + extra))
            [ "$len" -le "$MAX_SEED" ] || continue
            { vbyte "$version"; slice "$f" $HDR "$len"; } >"$out/$name-cut-$k-$extra"
            n=$((n + 1))
        done
    done
    # Small whole streams: trailing garbage after END, and two streams
    # concatenated (as btrfs receive accepts).
    body=$((size - HDR))
    if [ $((2 * size)) -le "$MAX_SEED" ]; then
        { vbyte "$version"; slice "$f" $HDR "$body"; printf 'garbage'; } >"$out/$name-trailing"
        { vbyte "$version"; slice "$f" $HDR "$body"; cat "$f"; } >"$out/$name-twice"
        { vbyte "$version"; slice "$f" $HDR "$body"; head -c 20 "$f"; } >"$out/$name-short-second"
        n=$((n + 3))
    fi
done

echo "seed-corpus.sh: wrote $n seeds from ${#streams[@]} streams into $CORPUS" >&2
