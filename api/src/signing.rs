//! What the operator signs and the sidecar verifies on every mutating storm
//! API call: Ed25519 over the method, the path, the body's SHA-256 and a
//! timestamp, so a request cannot be replayed later, redirected to another
//! storm, or altered in flight.

use sha2::{Digest, Sha256};

/// Header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-mapchaos-timestamp";
/// Header carrying the Ed25519 signature, hex-encoded (128 characters).
pub const SIGNATURE_HEADER: &str = "x-mapchaos-signature";
/// How far a request's timestamp may be from the sidecar's clock.
pub const MAX_SKEW_SECS: u64 = 30;

/// The exact bytes that are signed:
/// `mapchaos-v1\n{METHOD}\n{path}\n{sha256(body) hex}\n{timestamp}`.
pub fn signed_message(method: &str, path: &str, body: &[u8], timestamp: u64) -> Vec<u8> {
    let digest = Sha256::digest(body);
    format!(
        "mapchaos-v1\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        hex(&digest),
        timestamp
    )
    .into_bytes()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex (either case); `None` when it is not hex of whole bytes.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_binds_method_path_body_and_time() {
        let base = signed_message("put", "/v1/storms/a", b"{}", 100);
        assert!(base.starts_with(b"mapchaos-v1\nPUT\n/v1/storms/a\n"));
        assert_ne!(base, signed_message("DELETE", "/v1/storms/a", b"{}", 100));
        assert_ne!(base, signed_message("PUT", "/v1/storms/b", b"{}", 100));
        assert_ne!(base, signed_message("PUT", "/v1/storms/a", b"{ }", 100));
        assert_ne!(base, signed_message("PUT", "/v1/storms/a", b"{}", 101));
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001ABff"), Some(bytes.to_vec()));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }
}
