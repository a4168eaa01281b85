//! The fuzz case (`examples/fuzz_engine/exercise.rs`) on a fixed set of inputs, so that
//! `cargo test` runs what the fuzzers run: encoding round trip, validity of the encoding's
//! prefixes, and the eager, lazy and bounded-error engines agreeing step by step.

#[test]
fn fixed_inputs() {
    let toys = crate::common::toys();
    let pieces: &[&[u8]] = &[b"a", b"b", b"c", b" ", b"  ", b"\n", b"\n\n", b"1", b"'s", b".", b"\xC3\xA9", b"\xC3", b"z", "中".as_bytes(), b"\xE4", b"\xFF"];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..150 {
        let mut data = vec![next() as u8];
        for _ in 0..next() % 10 {
            data.extend_from_slice(pieces[next() as usize % pieces.len()]);
        }
        crate::exercise::run(&toys, &data);
    }
}
