//! Where a storm reaches a Redis-protocol server over the network: the URL
//! (`redis://`, `rediss://`, `unix://`), its credentials (the URL's userinfo,
//! or a password given apart) and TLS material, the URL as it may be shown
//! (the password never is), and connection errors that say which of them
//! failed: the password, TLS, or the node.

use std::path::PathBuf;

use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::client::ClientError;

/// TLS files for `rediss://` endpoints (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs the server's certificate; without it the system's
    /// trust store is used.
    pub ca: Option<PathBuf>,
    /// A client certificate, with `key`, for servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// How every endpoint of a storm is reached besides its URL.
#[derive(Clone, Default)]
pub struct EndpointOptions {
    pub tls: TlsFiles,
    /// The password when the URL carries none (`MAPCHAOS_TARGET_PASSWORD`).
    pub password: Option<String>,
}

impl std::fmt::Debug for EndpointOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointOptions")
            .field("tls", &self.tls)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why an endpoint cannot even be tried: bad input, said before connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(pub String);

/// One server a storm talks to.
#[derive(Clone)]
pub struct Endpoint {
    client: redis::Client,
    /// The URL without its password, for every message and report.
    shown: String,
    /// `host:port` (or the socket's path), to name the node.
    address: String,
    tls: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Endpoint {
    /// Parse `url` and load the TLS files it needs. Nothing connects yet.
    pub fn parse(url: &str, options: &EndpointOptions) -> Result<Endpoint, EndpointError> {
        let shown = redact(url);
        let bad = |why: String| EndpointError(format!("{shown} is not a Redis URL: {why}"));
        let info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
        let (address, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host_port(host, *port), false),
            ConnectionAddr::TcpTls { host, port, .. } => (host_port(host, *port), true),
            ConnectionAddr::Unix(path) => (path.display().to_string(), false),
            other => return Err(bad(format!("unsupported address {other:?}"))),
        };
        if url.contains("#insecure") {
            return Err(bad(
                "#insecure would skip checking the server's certificate; give its CA with --tls-ca instead"
                    .into(),
            ));
        }
        let mut settings = info.redis_settings().clone();
        if settings.password().is_none()
            && let Some(password) = options.password.as_deref().filter(|p| !p.is_empty())
        {
            settings = settings.set_password(password);
        }
        let info = info.set_redis_settings(settings);
        let client = if tls {
            install_crypto_provider();
            let read = |flag: &str,
                        path: &Option<PathBuf>|
             -> Result<Option<Vec<u8>>, EndpointError> {
                path.as_ref()
                    .map(|path| {
                        std::fs::read(path).map_err(|e| {
                            EndpointError(format!("{flag} {}: cannot read it: {e}", path.display()))
                        })
                    })
                    .transpose()
            };
            let root_cert = read("--tls-ca", &options.tls.ca)?;
            let client_tls = match (
                read("--tls-cert", &options.tls.cert)?,
                read("--tls-key", &options.tls.key)?,
            ) {
                (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
                (None, None) => None,
                _ => {
                    return Err(EndpointError(
                        "--tls-cert and --tls-key go together: give both or neither".into(),
                    ));
                }
            };
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
            .map_err(|e| EndpointError(format!("the TLS files for {shown}: {e}")))?
        } else {
            if !options.tls.is_empty() {
                return Err(EndpointError(format!(
                    "{shown} is plaintext, but --tls-ca/--tls-cert/--tls-key were given: write rediss:// for TLS"
                )));
            }
            redis::Client::open(info).map_err(|e| bad(e.to_string()))?
        };
        Ok(Endpoint {
            client,
            shown,
            address,
            tls,
        })
    }

    /// The URL as it may be printed: its password replaced by `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The node: `host:port`, or the socket's path.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A failed connect or handshake, said so that its cause is plain:
    /// the password, TLS, or the node. Never the password itself.
    pub(crate) fn connect_error(&self, error: &redis::RedisError) -> ClientError {
        ClientError::Connection(self.describe_error(error))
    }

    fn describe_error(&self, error: &redis::RedisError) -> String {
        let text = error.to_string();
        let code = error.code().unwrap_or_default();
        let address = &self.address;
        if error.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(code, "WRONGPASS" | "NOAUTH")
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
            || text.contains("invalid password")
        {
            let given = if self
                .client
                .get_connection_info()
                .redis_settings()
                .password()
                .is_some()
            {
                "the user and password given (the URL's userinfo or MAPCHAOS_TARGET_PASSWORD) were refused"
            } else {
                "the server wants a password and none was given (put it in the URL's userinfo or MAPCHAOS_TARGET_PASSWORD)"
            };
            return format!("authentication failed at {address}: {given} ({text})");
        }
        if let Some(tls) = tls_failure(&text) {
            return format!("TLS failure with {address}: {tls} ({text})");
        }
        if self.tls && (text.contains("tls") || text.contains("TLS") || text.contains("handshake"))
        {
            return format!("TLS failure with {address}: {text}");
        }
        // Connected, then no reply in time: a TLS handshake a plaintext
        // server does not answer (a read timeout, not a connect timeout).
        if self.tls
            && (text.contains("Resource temporarily unavailable") || text.contains("os error 11"))
        {
            return format!(
                "TLS failure with {address}: the server did not answer the TLS handshake (is the port plaintext? write redis://) ({text})"
            );
        }
        if error.is_connection_refusal() || error.is_timeout() || error.is_io_error() {
            return format!("node {address} unreachable: {text}");
        }
        format!("{address}: {text}")
    }
}

/// What a rustls error says, in words, when it is one.
fn tls_failure(text: &str) -> Option<&'static str> {
    let reasons = [
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a trusted CA (give its CA with --tls-ca)",
        ),
        (
            "NotValidForName",
            "the server's certificate does not name the URL's host",
        ),
        (
            "not valid for name",
            "the server's certificate does not name the URL's host",
        ),
        ("Expired", "the server's certificate has expired"),
        ("NotValidYet", "the server's certificate is not valid yet"),
        (
            "BadSignature",
            "the server's certificate has a bad signature",
        ),
        ("BadEncoding", "the server's certificate cannot be decoded"),
        (
            "invalid peer certificate",
            "the server's certificate was refused",
        ),
        (
            "CertificateRequired",
            "the server wants a client certificate (--tls-cert and --tls-key)",
        ),
        (
            "received fatal alert",
            "the server refused the handshake (a client certificate it does not accept?)",
        ),
        (
            "InvalidContentType",
            "the server did not answer in TLS (is the port plaintext? write redis://)",
        ),
        (
            "corrupt message",
            "the server did not answer in TLS (is the port plaintext? write redis://)",
        ),
    ];
    reasons
        .into_iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, reason)| reason)
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// rustls picks its crypto from the process default: ring, as the rest of
/// the workspace uses (a second provider in the tree would make it refuse).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `url` with the password of its userinfo replaced by `***`: the form in
/// every message, report and log.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The userinfo ends at the last '@' (a host, a db number or the query
    // has none), so a password with '/', '#' or '@' in it is hidden too.
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    // A userinfo without ':' is a user name alone (the redis crate reads it so).
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{user}{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact("redis://alice:s3cret@db.example:6380/2"),
            "redis://alice:***@db.example:6380/2"
        );
        assert_eq!(
            redact("rediss://:s3cret@10.0.0.1:6379"),
            "rediss://:***@10.0.0.1:6379"
        );
        assert_eq!(
            redact("redis://a:b:c@@h:1/0"),
            "redis://a:***@h:1/0",
            "a password with ':' and '@' in it"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://bob@h:1"), "redis://bob@h:1");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("redis://u:pa/ss#x@h:1"), "redis://u:***@h:1");
    }

    #[test]
    fn the_env_password_is_used_only_without_one_in_the_url() {
        let options = EndpointOptions {
            password: Some("from-env".into()),
            ..EndpointOptions::default()
        };
        let with_env = Endpoint::parse("redis://alice@127.0.0.1:1", &options).unwrap();
        let settings = with_env
            .client()
            .get_connection_info()
            .redis_settings()
            .clone();
        assert_eq!(settings.username(), Some("alice"));
        assert_eq!(settings.password(), Some("from-env"));
        assert_eq!(with_env.shown(), "redis://alice@127.0.0.1:1");
        assert_eq!(with_env.address(), "127.0.0.1:1");
        let in_url = Endpoint::parse("redis://alice:url-pw@127.0.0.1:1", &options).unwrap();
        assert_eq!(
            in_url
                .client()
                .get_connection_info()
                .redis_settings()
                .password(),
            Some("url-pw")
        );
        assert!(!format!("{in_url:?} {options:?}").contains("pw"));
    }

    #[test]
    fn tls_files_need_rediss_and_come_in_pairs() {
        let options = EndpointOptions {
            tls: TlsFiles {
                ca: Some("/nonexistent/ca.pem".into()),
                ..TlsFiles::default()
            },
            ..EndpointOptions::default()
        };
        let plain = Endpoint::parse("redis://127.0.0.1:1", &options).unwrap_err();
        assert!(plain.0.contains("plaintext"), "{plain}");
        let missing = Endpoint::parse("rediss://127.0.0.1:1", &options).unwrap_err();
        assert!(
            missing.0.contains("--tls-ca /nonexistent/ca.pem"),
            "{missing}"
        );
        let half = EndpointOptions {
            tls: TlsFiles {
                cert: Some("/dev/null".into()),
                ..TlsFiles::default()
            },
            ..EndpointOptions::default()
        };
        let half = Endpoint::parse("rediss://127.0.0.1:1", &half).unwrap_err();
        assert!(half.0.contains("--tls-cert and --tls-key"), "{half}");
        let insecure = Endpoint::parse(
            "rediss://127.0.0.1:1/#insecure",
            &EndpointOptions::default(),
        )
        .unwrap_err();
        assert!(insecure.0.contains("#insecure"), "{insecure}");
    }

    #[test]
    fn an_unreachable_node_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint::parse(
            &format!("redis://u:pw@127.0.0.1:{port}"),
            &EndpointOptions::default(),
        )
        .unwrap();
        let Err(error) = endpoint
            .client()
            .get_connection_with_timeout(std::time::Duration::from_secs(1))
        else {
            panic!("nothing listens on port {port}")
        };
        let ClientError::Connection(message) = endpoint.connect_error(&error) else {
            unreachable!()
        };
        assert!(
            message.starts_with(&format!("node 127.0.0.1:{port} unreachable")),
            "{message}"
        );
        assert!(!message.contains("pw"), "{message}");
    }
}
