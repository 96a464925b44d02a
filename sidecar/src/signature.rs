//! Who may use the storm API: every call (reads included) must be signed by
//! the operator's Ed25519 key for this very pod, recently, and only once.
//! The checks, in order: the headers are there and well-formed, the
//! timestamp is within [`MAX_SKEW_SECS`] of this clock, the request names
//! this pod (namespace/name, and the uid when this sidecar knows its own),
//! the signature holds over `mapchaos_api::signing::SignedRequest`, and the
//! nonce was not seen before. Seen nonces are kept until their request
//! would be stale anyway, at most [`NONCE_CACHE_ENTRIES`] of them; a full
//! cache refuses new requests (429) rather than forget one and let it be
//! replayed.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, StatusCode};
use ed25519_dalek::{Signature, VerifyingKey};
use mapchaos_api::signing::{
    MAX_NONCE_LEN, MAX_SKEW_SECS, MIN_NONCE_LEN, NONCE_HEADER, PodIdentity, SIGNATURE_HEADER,
    SignedRequest, TARGET_HEADER, TARGET_UID_HEADER, TIMESTAMP_HEADER, from_hex,
};
use parking_lot::Mutex;

/// The most nonces remembered at once (within one skew window, that is
/// this many signed requests a minute; the operator sends a few per storm
/// every 10 s). At most 64 bytes each, plus the map's overhead.
pub const NONCE_CACHE_ENTRIES: usize = 10_000;

/// Why a request is refused: the status and a sentence for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }
}

/// Checks storm API requests.
pub struct Verifier {
    key: Option<VerifyingKey>,
    identity: Option<PodIdentity>,
    nonces: Mutex<NonceCache>,
}

impl Verifier {
    /// Verify against the operator's public key (32 bytes, hex), for the pod
    /// `identity`. Without a key, or without an identity, every request is
    /// refused (the storm API is then off).
    pub fn new(public_key: Option<&str>, identity: Option<PodIdentity>) -> Result<Self, String> {
        let key = match public_key {
            None => None,
            Some(text) => {
                let bytes: [u8; 32] = from_hex(text)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("the operator public key must be 64 hex characters (an Ed25519 key)")?;
                Some(VerifyingKey::from_bytes(&bytes).map_err(|e| {
                    format!("the operator public key is not a valid Ed25519 key: {e}")
                })?)
            }
        };
        Ok(Verifier {
            key,
            identity,
            nonces: Mutex::new(NonceCache::new(NONCE_CACHE_ENTRIES)),
        })
    }

    /// The pod this sidecar answers for.
    pub fn identity(&self) -> Option<&PodIdentity> {
        self.identity.as_ref()
    }

    /// Check one request; on success its nonce is spent.
    pub fn verify(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
        self.verify_at(method, path, headers, body, unix_now())
    }

    fn verify_at(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<(), Refusal> {
        let Some(key) = &self.key else {
            return Err(Refusal::unauthorized(
                "the storm API is disabled: the sidecar was started without --operator-public-key",
            ));
        };
        let Some(identity) = &self.identity else {
            return Err(Refusal::unauthorized(
                "the storm API is disabled: this sidecar does not know which pod it is \
                 (set MAPCHAOS_POD_NAMESPACE, MAPCHAOS_POD_NAME and MAPCHAOS_POD_UID from the \
                 downward API, or --pod-namespace/--pod-name/--pod-uid), so it cannot tell \
                 whether a request was signed for it",
            ));
        };
        let header = |name: &str| -> Result<&str, Refusal> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Refusal::unauthorized(format!("missing {name} header: requests must be signed"))
                })
        };
        let timestamp: u64 = header(TIMESTAMP_HEADER)?.trim().parse().map_err(|_| {
            Refusal::unauthorized(format!("{TIMESTAMP_HEADER} must be Unix seconds"))
        })?;
        if now.abs_diff(timestamp) > MAX_SKEW_SECS {
            return Err(Refusal::unauthorized(format!(
                "stale request: signed at {timestamp}, {}s from this sidecar's clock (max {MAX_SKEW_SECS}s)",
                now.abs_diff(timestamp)
            )));
        }
        let nonce = header(NONCE_HEADER)?.trim();
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
            || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Refusal::unauthorized(format!(
                "{NONCE_HEADER} must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} hex characters"
            )));
        }
        let target_text = header(TARGET_HEADER)?;
        let uid = headers.get(TARGET_UID_HEADER).and_then(|v| v.to_str().ok());
        let Some(target) = PodIdentity::parse_target(target_text, uid) else {
            return Err(Refusal::unauthorized(format!(
                "{TARGET_HEADER} must be namespace/name of a pod (and {TARGET_UID_HEADER} its uid)"
            )));
        };
        if target.namespace != identity.namespace || target.name != identity.name {
            return Err(Refusal::unauthorized(format!(
                "wrong pod: the request was signed for pod {}, but this sidecar is pod {}",
                target.target(),
                identity.target()
            )));
        }
        if !identity.uid.is_empty() && target.uid != identity.uid {
            return Err(Refusal::unauthorized(format!(
                "wrong pod: the request was signed for pod {} with uid {:?}, but this sidecar's \
                 pod has uid {} (a pod of the same name that this one replaced?)",
                target.target(),
                target.uid,
                identity.uid
            )));
        }
        let signature: [u8; 64] = from_hex(header(SIGNATURE_HEADER)?)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Refusal::unauthorized(format!("{SIGNATURE_HEADER} must be 128 hex characters"))
            })?;
        let message = SignedRequest {
            method: method.as_str(),
            path,
            body,
            timestamp,
            nonce,
            target: &target,
        }
        .message();
        key.verify_strict(&message, &Signature::from_bytes(&signature))
            .map_err(|_| {
                Refusal::unauthorized(
                    "bad signature: not signed by the operator's key (mapchaos-v2), or altered",
                )
            })?;
        self.nonces
            .lock()
            .spend(nonce, timestamp + MAX_SKEW_SECS, now)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Nonces of accepted requests, each kept until its request is stale.
#[derive(Debug)]
struct NonceCache {
    capacity: usize,
    /// Nonce (lower-case) to the last second its request is fresh.
    seen: HashMap<String, u64>,
}

impl NonceCache {
    fn new(capacity: usize) -> Self {
        NonceCache {
            capacity,
            seen: HashMap::new(),
        }
    }

    fn spend(&mut self, nonce: &str, fresh_until: u64, now: u64) -> Result<(), Refusal> {
        let nonce = nonce.to_ascii_lowercase();
        if self.seen.contains_key(&nonce) {
            return Err(Refusal::unauthorized(format!(
                "replayed request: nonce {nonce} was already used (each signed request is accepted once)"
            )));
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, until| *until >= now);
        }
        if self.seen.len() >= self.capacity {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "too many signed requests: {} in the last {}s; retry later",
                    self.capacity,
                    2 * MAX_SKEW_SECS
                ),
            });
        }
        self.seen.insert(nonce, fresh_until);
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_and_forgotten_only_when_stale() {
        let mut cache = NonceCache::new(3);
        assert!(cache.spend("aa", 130, 100).is_ok());
        let replay = cache.spend("AA", 130, 101).unwrap_err();
        assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
        assert!(replay.message.contains("replayed"), "{replay:?}");
        assert!(cache.spend("bb", 131, 101).is_ok());
        assert!(cache.spend("cc", 140, 110).is_ok());
        // Full, and nothing stale yet: refused, not evicted.
        let full = cache.spend("dd", 140, 110).unwrap_err();
        assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(cache.len(), 3);
        // aa and bb are stale by 132; their places go to new nonces.
        assert!(cache.spend("dd", 160, 132).is_ok());
        assert_eq!(cache.len(), 2);
        // Forgotten once stale (by then the verifier refuses its request as stale).
        assert!(cache.spend("aa", 162, 132).is_ok());
        assert!(cache.spend("ee", 162, 132).is_err());
        assert!(cache.len() <= 3);
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let mut cache = NonceCache::new(NONCE_CACHE_ENTRIES);
        let mut refused = 0;
        for i in 0..(NONCE_CACHE_ENTRIES + 500) {
            if cache.spend(&format!("{i:032x}"), 1_000, 970).is_err() {
                refused += 1;
            }
            assert!(cache.len() <= NONCE_CACHE_ENTRIES);
        }
        assert_eq!(refused, 500);
        // A minute later all are stale and the cache takes new ones again.
        assert!(cache.spend("ffffffffffffffff", 1_060, 1_031).is_ok());
        assert_eq!(cache.len(), 1);
    }
}
