//! Where does a validity check spend its time? `cargo run --release --example profile_encode -- TOKENIZER_JSON`
use bytecover_core::{pretokenize::PreTokenizer, Canonicalizer};
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("tokenizer.json path");
    let json = std::fs::read_to_string(&path).unwrap();
    let canon = Canonicalizer::from_json(&json, None).unwrap();
    let root: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pre = PreTokenizer::from_json(&root).unwrap();
    let window = b" of Fra".to_vec();
    let tail = canon.encode(&window).unwrap();
    let ids: Vec<u32> = canon.vocab().text_tokens().map(|(i, _)| i).take(20000).collect();
    let mut text = window.clone();
    let t = Instant::now();
    let mut n = 0usize;
    for &id in &ids {
        text.truncate(window.len());
        text.extend_from_slice(canon.vocab().token_bytes(id).unwrap());
        n += pre.pieces(&text).len();
    }
    println!("pieces: {:.2} us/check ({n})", t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64);
    let t = Instant::now();
    for &id in &ids {
        text.truncate(window.len());
        text.extend_from_slice(canon.vocab().token_bytes(id).unwrap());
        n += canon.encode(&text).unwrap().len();
    }
    println!("encode: {:.2} us/check ({n})", t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64);
    let t = Instant::now();
    let mut bad = 0;
    let mut tl = tail.clone();
    for &id in &ids {
        text.truncate(window.len());
        text.extend_from_slice(canon.vocab().token_bytes(id).unwrap());
        tl.truncate(tail.len());
        tl.push(id);
        if !canon.valid_from(&text, &tl) {
            bad += 1;
        }
    }
    println!("valid_from: {:.2} us/check, invalid {bad}", t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64);
}
