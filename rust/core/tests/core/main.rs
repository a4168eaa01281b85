//! The core's integration tests, one binary (each test binary is a separate link of every
//! dependency with the release profile's LTO: seven of them took most of an 11-minute build).
//! `common` holds the toys, the synthetic LM, the validity oracle and the brute force.

#[path = "../common/mod.rs"]
mod common;
#[path = "../../examples/fuzz_engine/exercise.rs"]
mod exercise;

mod bounded_error;
mod canonical_oracle;
mod engine_oracle;
mod fuzz_smoke;
mod lazy_choice;
mod properties;
