//! API key format, generation and hashing.
//!
//! A key is `cgk_<prefix>_<secret>`: a 12-hex-digit public prefix used to find the key and to
//! show it in listings, and a 48-hex-digit (192-bit) secret. Only the SHA-256 of the whole key is
//! stored; verification compares hashes in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

const PREFIX_HEX: usize = 12;
const SECRET_HEX: usize = 48;
/// `cgk_` + prefix + `_` + secret.
pub const KEY_LEN: usize = 4 + PREFIX_HEX + 1 + SECRET_HEX;

/// A key's parts, parsed without touching the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// `cgk_` + 12 hex digits: what listings show and what `revoke` takes.
    pub prefix: &'a str,
}

/// Parses a presented key; anything not of the exact shape is rejected before any lookup.
pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    if key.len() != KEY_LEN || !key.starts_with("cgk_") {
        return None;
    }
    let bytes = key.as_bytes();
    if bytes[4 + PREFIX_HEX] != b'_' {
        return None;
    }
    let hex_ok = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex_ok(&bytes[4..4 + PREFIX_HEX]) || !hex_ok(&bytes[4 + PREFIX_HEX + 1..]) {
        return None;
    }
    Some(ParsedKey {
        prefix: &key[..4 + PREFIX_HEX],
    })
}

/// The stored form of a key: lowercase hex SHA-256 of the whole key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `key` hashes to `stored_hash`, compared in constant time.
pub fn verify(key: &str, stored_hash: &str) -> bool {
    let h = hash(key);
    h.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// A new random key. Returns `(full key, prefix)`.
pub fn generate() -> Result<(String, String)> {
    let mut raw = [0u8; PREFIX_HEX / 2 + SECRET_HEX / 2];
    getrandom::fill(&mut raw).map_err(|e| Error::Random(e.to_string()))?;
    let prefix = format!("cgk_{}", hex::encode(&raw[..PREFIX_HEX / 2]));
    let key = format!("{prefix}_{}", hex::encode(&raw[PREFIX_HEX / 2..]));
    Ok((key, prefix))
}

/// A random id with a readable kind prefix (`org_…`, `key_…`, `rec_…`): 128 bits of randomness.
pub fn new_id(kind: &str) -> Result<String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| Error::Random(e.to_string()))?;
    Ok(format!("{kind}_{}", hex::encode(raw)))
}

/// A ledger record id that sorts by creation time: the kind, then 12 hex digits of Unix
/// milliseconds and the low 80 bits of `random` (`rec_018f…`). Records are inserted roughly in
/// time order, so each lands at the right edge of the primary-key index, where PostgreSQL appends
/// without a descent, instead of on a random page of it. The id only has to be unique, not
/// secret, so the caller supplies the bits from a fast generator rather than the operating
/// system's (a system call per request on the proxy's hot path).
pub fn time_ordered_id(kind: &str, unix_micros: i64, random: u128) -> String {
    let ms = u64::try_from(unix_micros / 1000).unwrap_or(0) & 0xffff_ffff_ffff;
    let low = random & ((1u128 << 80) - 1);
    let mut id = String::with_capacity(kind.len() + 1 + 32);
    id.push_str(kind);
    id.push('_');
    push_hex(&mut id, u128::from(ms), 12);
    push_hex(&mut id, low, 20);
    id
}

/// Appends the low `digits` hex digits of `value`, zero-padded, lower case: what
/// `format!("{value:0digits$x}")` gives, without the formatting machinery (ids are made on
/// every request).
pub fn push_hex(out: &mut String, value: u128, digits: u32) {
    let mut buf = [0u8; 32];
    // 16 bytes always fit in 32 hex digits, and hex digits are ASCII.
    let _ = hex::encode_to_slice(value.to_be_bytes(), &mut buf);
    let digits = digits.min(32) as usize;
    out.push_str(std::str::from_utf8(&buf[32 - digits..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_hex_is_zero_padded_lower_case_hex() {
        for (v, d) in [
            (0u128, 1),
            (0xabc, 12),
            (u128::MAX, 32),
            (u128::MAX, 20),
            (1 << 79, 20),
        ] {
            let mut s = String::from("x");
            push_hex(&mut s, v, d);
            let width = d as usize;
            let mask = if d == 32 {
                u128::MAX
            } else {
                (1u128 << (4 * d)) - 1
            };
            assert_eq!(s, format!("x{:0width$x}", v & mask), "{v} {d}");
        }
    }

    #[test]
    fn time_ordered_ids_sort_by_time_and_keep_80_random_bits() {
        let a = time_ordered_id("rec", 1_764_000_000_000_000, u128::MAX);
        let b = time_ordered_id("rec", 1_764_000_000_001_000, 0);
        let c = time_ordered_id("rec", 1_764_000_000_001_000, 1 << 79);
        assert_eq!(a.len(), "rec_".len() + 32);
        assert!(a.starts_with("rec_019ab"), "{a}");
        assert!(a < b && a < c, "{a} {b} {c}");
        assert_ne!(b, c);
        assert_eq!(b[..16], c[..16]);
        assert!(a.ends_with(&"f".repeat(20)), "{a}");
        assert!(b.ends_with(&"0".repeat(20)), "{b}");
    }

    #[test]
    fn generated_keys_parse_and_verify() {
        let (key, prefix) = generate().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(parse(&key).unwrap().prefix, prefix);
        let h = hash(&key);
        assert!(verify(&key, &h));
        let mut other = key.clone();
        other.replace_range(KEY_LEN - 1.., if key.ends_with('0') { "1" } else { "0" });
        assert!(!verify(&other, &h));
        assert_ne!(generate().unwrap().0, key);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let (key, _) = generate().unwrap();
        for bad in [
            "",
            "cgk_",
            &key[..KEY_LEN - 1],
            &format!("{key}0"),
            &key.replace("cgk_", "sk-_"),
            &key.to_uppercase(),
            "cgk_zzzzzzzzzzzz_000000000000000000000000000000000000000000000000",
            "cgk_000000000000-000000000000000000000000000000000000000000000000",
            "cgk_00000000000é_00000000000000000000000000000000000000000000000",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
