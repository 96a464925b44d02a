//! The operator's Ed25519 storm-signing key, read from a file (a mounted
//! Secret): PEM PKCS#8 as Helm's `genPrivateKey "ed25519"` (and `openssl
//! genpkey -algorithm ed25519`) write it, or the raw 32-byte seed as 64 hex
//! characters. Signs storm API requests as `mapchaos_api::signing` defines.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use mapchaos_api::signing::{SignedRequest, from_hex, hex};

use crate::error::Error;

/// The private key storm requests are signed with.
#[derive(Clone)]
pub struct StormSigner {
    key: SigningKey,
}

impl fmt::Debug for StormSigner {
    /// Shows the public half only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StormSigner")
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl StormSigner {
    /// Read the key at `path`; a missing or unreadable file is an error that
    /// says where the key should come from.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::SigningKeyRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| Error::SigningKeyFormat {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parse PEM PKCS#8 or 64 hex characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return SigningKey::from_pkcs8_pem(text)
                .map(|key| StormSigner { key })
                .map_err(|e| format!("PEM PKCS#8 that is not an Ed25519 private key: {e}"));
        }
        let seed: [u8; 32] = from_hex(text)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "neither PEM nor 64 hex characters ({} characters)",
                    text.len()
                )
            })?;
        Ok(StormSigner {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public key as the sidecar's `--operator-public-key` takes it.
    pub fn public_key_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// The `x-mapchaos-signature` value for a request.
    pub fn sign(&self, request: &SignedRequest<'_>) -> String {
        hex(&self.key.sign(&request.message()).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `openssl genpkey -algorithm ed25519`: PKCS#8 v1, the layout
    /// Go's `x509.MarshalPKCS8PrivateKey` (and so Helm) writes.
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIFxeAr1Cv34j7/zur6yraUJpu+h+FcgKyFLP+ugFKwEn\n\
        -----END PRIVATE KEY-----\n";
    const SEED_HEX: &str = "5c5e02bd42bf7e23effceeafacab694269bbe87e15c80ac852cffae8052b0127";
    /// `openssl pkey -text` of the same key.
    const PUBLIC_HEX: &str = "5d15367514a7e597bdce5cf17d4e932c2b2e0477ea37685bd0ba91c80437140e";

    #[test]
    fn reads_pem_pkcs8_and_hex_as_the_same_key() {
        let from_pem = StormSigner::parse(PEM).unwrap();
        let from_hex = StormSigner::parse(&format!("{SEED_HEX}\n")).unwrap();
        assert_eq!(from_pem.public_key_hex(), PUBLIC_HEX);
        assert_eq!(from_hex.public_key_hex(), PUBLIC_HEX);
        let pod = mapchaos_api::signing::PodIdentity::new("shop", "cart-0", "u-1");
        let request = SignedRequest {
            method: "PUT",
            path: "/v1/storms/a",
            body: b"{}",
            timestamp: 1,
            nonce: "00112233445566778899aabbccddeeff",
            target: &pod,
        };
        assert_eq!(from_pem.sign(&request), from_hex.sign(&request));
        assert!(
            !format!("{from_pem:?}").contains(SEED_HEX),
            "Debug hides the secret"
        );
    }

    #[test]
    fn refuses_other_text_with_a_reason() {
        assert!(StormSigner::parse("abcd").unwrap_err().contains("64 hex"));
        let not_ed25519 = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(
            StormSigner::parse(not_ed25519)
                .unwrap_err()
                .contains("PEM PKCS#8")
        );
    }

    #[test]
    fn a_missing_file_says_where_the_key_should_come_from() {
        let error = StormSigner::from_file(Path::new("/nonexistent/mapchaos/key.pem")).unwrap_err();
        assert_eq!(error.metric_label(), "signing_key");
        let message = error.to_string();
        assert!(
            message.contains("/nonexistent/mapchaos/key.pem"),
            "{message}"
        );
        assert!(message.contains("mount the Secret"), "{message}");
    }

    #[test]
    fn a_file_with_a_bad_key_names_it() {
        let path = std::env::temp_dir().join(format!("mapchaos-bad-key-{}", std::process::id()));
        std::fs::write(&path, "not a key").unwrap();
        let error = StormSigner::from_file(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("is not an Ed25519 private key"), "{error}");
    }
}
