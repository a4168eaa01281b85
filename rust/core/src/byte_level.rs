//! GPT-2's reversible byte <-> printable-character table. Byte-level BPE vocabularies store every
//! byte as one visible character (e.g. space 0x20 is `Ġ`, newline is `Ċ`), so a token's real bytes
//! are found by mapping each character of its string back through this table.

use crate::primitives::N_BYTES;
use std::sync::OnceLock;

/// The 256 characters standing for bytes 0..=255.
pub fn byte_to_char() -> &'static [char; N_BYTES] {
    static TABLE: OnceLock<[char; N_BYTES]> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Printable Latin-1 bytes stand for themselves; the rest are shifted to U+0100 onwards
        // in increasing byte order.
        let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let mut table = ['\0'; N_BYTES];
        let mut next = 0u32;
        for b in 0..N_BYTES as u32 {
            table[b as usize] = if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                let c = char::from_u32(0x100 + next).unwrap();
                next += 1;
                c
            };
        }
        table
    })
}

/// Inverse table; `None` for characters that stand for no byte.
pub fn char_to_byte(c: char) -> Option<u8> {
    static INV: OnceLock<rustc_hash::FxHashMap<char, u8>> = OnceLock::new();
    INV.get_or_init(|| byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect()).get(&c).copied()
}

/// Bytes of a byte-level token string; `None` if some character is outside the table.
pub fn decode_token(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// The byte-level string for raw bytes.
pub fn encode_bytes(bytes: &[u8]) -> String {
    let t = byte_to_char();
    bytes.iter().map(|&b| t[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        assert_eq!(byte_to_char()[b' ' as usize], 'Ġ');
        assert_eq!(byte_to_char()[b'\n' as usize], 'Ċ');
        assert_eq!(byte_to_char()[b'a' as usize], 'a');
        assert_eq!(decode_token("Ġhello"), Some(b" hello".to_vec()));
        assert_eq!(decode_token("ĊĊ"), Some(b"\n\n".to_vec()));
        assert_eq!(decode_token("日"), None);
    }

    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_token(&encode_bytes(&all)), Some(all));
    }
}
