//! Arbitrary bytes through everything the core does with user input: encoding (round trip),
//! validity of the encoding's prefixes, and both engines stepping through the bytes with a
//! synthetic LM. Errors are fine (zero mass, unencodable input); a panic is a finding.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../examples/fuzz_engine/exercise.rs"]
mod exercise;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TOYS: OnceLock<Vec<common::Toy>> = OnceLock::new();
    exercise::run(TOYS.get_or_init(common::toys), data);
});
