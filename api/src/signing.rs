//! What the operator signs and the sidecar verifies on every storm API call,
//! reads included: Ed25519 over the method, the path, the body's SHA-256, a
//! timestamp, a nonce and the identity of the pod the request is meant for,
//! so a request cannot be altered in flight, redirected to another storm or
//! another pod's sidecar, or replayed (later, past the clock skew window;
//! within it, the sidecar's nonce cache refuses a second use).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The first line of every signed message; a new layout gets a new version.
pub const VERSION: &str = "mapchaos-v2";
/// Header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-mapchaos-timestamp";
/// Header carrying the Ed25519 signature, hex-encoded (128 characters).
pub const SIGNATURE_HEADER: &str = "x-mapchaos-signature";
/// Header carrying the request's nonce: hex, [`MIN_NONCE_LEN`] to
/// [`MAX_NONCE_LEN`] characters, never used twice.
pub const NONCE_HEADER: &str = "x-mapchaos-nonce";
/// Header naming the pod the request is meant for, `namespace/name`.
pub const TARGET_HEADER: &str = "x-mapchaos-target";
/// Header carrying that pod's uid (absent when the signer did not know it).
pub const TARGET_UID_HEADER: &str = "x-mapchaos-target-uid";
/// How far a request's timestamp may be from the sidecar's clock.
pub const MAX_SKEW_SECS: u64 = 30;
/// Shortest nonce accepted, in hex characters (64 bits).
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce accepted, in hex characters, so the replay cache's entries
/// are bounded.
pub const MAX_NONCE_LEN: usize = 64;

/// The pod a signed request is meant for: its sidecar refuses a request
/// signed for any other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    /// Empty when unknown.
    pub uid: String,
}

impl PodIdentity {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        PodIdentity {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// `namespace/name`, as [`TARGET_HEADER`] carries it.
    pub fn target(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Parse [`TARGET_HEADER`]'s `namespace/name` (and the uid header's
    /// value, if any).
    pub fn parse_target(target: &str, uid: Option<&str>) -> Option<Self> {
        let (namespace, name) = target.trim().split_once('/')?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        let uid = uid.unwrap_or_default().trim();
        let uid_ok = uid.len() <= 128
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (plain(namespace) && plain(name) && uid_ok).then(|| PodIdentity::new(namespace, name, uid))
    }
}

/// One request as it is signed.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    pub body: &'a [u8],
    pub timestamp: u64,
    pub nonce: &'a str,
    pub target: &'a PodIdentity,
}

impl SignedRequest<'_> {
    /// The exact bytes that are signed:
    /// `mapchaos-v2\n{METHOD}\n{path}\n{sha256(body) hex}\n{timestamp}\n{nonce}\n{namespace}\n{name}\n{uid}`.
    pub fn message(&self) -> Vec<u8> {
        let digest = Sha256::digest(self.body);
        format!(
            "{VERSION}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.path,
            hex(&digest),
            self.timestamp,
            self.nonce,
            self.target.namespace,
            self.target.name,
            self.target.uid,
        )
        .into_bytes()
    }
}

/// A fresh nonce: 32 hex characters, unique to this process (a per-process
/// random seed from the OS, which std's hash maps are seeded with, and a
/// counter) and, through the seed, to every other signer.
pub fn new_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<[u64; 2]> = std::sync::OnceLock::new();
    let seed = SEED.get_or_init(|| {
        let random = || std::hash::RandomState::new().build_hasher().finish();
        [random(), random()]
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(seed[0].to_le_bytes());
    hasher.update(seed[1].to_le_bytes());
    hasher.update(count.to_le_bytes());
    hex(&hasher.finalize()[..16])
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
    fn the_message_binds_method_path_body_time_nonce_and_pod() {
        let pod = PodIdentity::new("shop", "cart-0", "u-1");
        let base = SignedRequest {
            method: "put",
            path: "/v1/storms/a",
            body: b"{}",
            timestamp: 100,
            nonce: "00112233445566778899aabbccddeeff",
            target: &pod,
        };
        let message = base.message();
        assert!(message.starts_with(b"mapchaos-v2\nPUT\n/v1/storms/a\n"));
        assert!(message.ends_with(b"\n100\n00112233445566778899aabbccddeeff\nshop\ncart-0\nu-1"));
        let other_name = PodIdentity::new("shop", "cart-1", "u-1");
        let other_namespace = PodIdentity::new("shop2", "cart-0", "u-1");
        let other_uid = PodIdentity::new("shop", "cart-0", "u-2");
        for changed in [
            SignedRequest {
                method: "DELETE",
                ..base
            },
            SignedRequest {
                path: "/v1/storms/b",
                ..base
            },
            SignedRequest {
                body: b"{ }",
                ..base
            },
            SignedRequest {
                timestamp: 101,
                ..base
            },
            SignedRequest {
                nonce: "ffffffffffffffff",
                ..base
            },
            SignedRequest {
                target: &other_name,
                ..base
            },
            SignedRequest {
                target: &other_namespace,
                ..base
            },
            SignedRequest {
                target: &other_uid,
                ..base
            },
        ] {
            assert_ne!(message, changed.message(), "{changed:?}");
        }
    }

    #[test]
    fn nonces_are_hex_of_the_accepted_length_and_never_repeat() {
        let nonces: std::collections::HashSet<String> = (0..10_000).map(|_| new_nonce()).collect();
        assert_eq!(nonces.len(), 10_000);
        for nonce in nonces.iter().take(10) {
            assert!((MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()));
            assert!(from_hex(nonce).is_some(), "{nonce}");
        }
    }

    #[test]
    fn targets_parse_and_junk_is_refused() {
        assert_eq!(
            PodIdentity::parse_target("shop/cart-0", Some("u-1")),
            Some(PodIdentity::new("shop", "cart-0", "u-1"))
        );
        assert_eq!(
            PodIdentity::parse_target("shop/cart-0", None),
            Some(PodIdentity::new("shop", "cart-0", ""))
        );
        for bad in ["shop", "/cart", "shop/", "shop/ca\nrt", "a/b/c"] {
            assert_eq!(PodIdentity::parse_target(bad, None), None, "{bad:?}");
        }
        assert_eq!(PodIdentity::parse_target("shop/cart", Some("u\n1")), None);
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
