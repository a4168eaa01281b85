//! A bounded random-input loop over the core (the stable-toolchain stand-in for the cargo-fuzz
//! target in `rust/core/fuzz`): random byte strings, mostly from the toys' alphabet, through
//! encoding, validity and the eager, lazy and bounded-error engines (`exercise.rs`). Any panic
//! is a finding: the input is printed in hex and the process exits with status 1.
//!
//! `cargo run --release -p bytecover-core --example fuzz_engine -- --seconds 60 [--seed N]`
//! `cargo run --release -p bytecover-core --example fuzz_engine -- --replay 01abff...`

#[path = "../../tests/common/mod.rs"]
mod common;
mod exercise;

use std::time::{Duration, Instant};

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex input")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).map(|i| args.get(i + 1).unwrap_or_else(|| panic!("{name} needs a value")).clone());
    let toys = common::toys();
    if let Some(input) = value("--replay") {
        exercise::run(&toys, &unhex(&input));
        println!("no panic");
        return;
    }
    let seconds: f64 = value("--seconds").map_or(10.0, |s| s.parse().expect("--seconds N"));
    let mut state: u64 = value("--seed").map_or(0x2545_F491_4F6C_DD1D, |s| s.parse().expect("--seed N")) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Bytes the toys have rules for, weighted towards whitespace runs and partial characters.
    let alphabet: &[&[u8]] = &[
        b"a",
        b"b",
        b"c",
        b" ",
        b"  ",
        b"\n",
        b"\n\n",
        b"1",
        b"2",
        b"'s",
        b".",
        b"\xC3\xA9",
        b"\xC3",
        b"z",
        "中".as_bytes(),
        "😀".as_bytes(),
        b"\xE4",
        b"\xF0\x9F",
    ];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut cases, mut slowest) = (0u64, (Duration::ZERO, Vec::new()));
    while Instant::now() < deadline {
        let mut data = vec![next() as u8];
        let parts = next() % 12;
        for _ in 0..parts {
            let r = next();
            if r % 4 == 0 {
                data.push((r >> 8) as u8);
            } else {
                data.extend_from_slice(alphabet[(r >> 8) as usize % alphabet.len()]);
            }
        }
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| exercise::run(&toys, &data));
        let took = start.elapsed();
        if took > slowest.0 {
            slowest = (took, data.clone());
        }
        cases += 1;
        if outcome.is_err() {
            eprintln!("panic on input {} (replay with --replay {})", hex(&data), hex(&data));
            std::process::exit(1);
        }
    }
    println!("{cases} cases in {seconds} s, no panic; slowest {:?} on {}", slowest.0, hex(&slowest.1));
}
