//! The edge that makes steady-state probe calls: one HTTP(S) request per
//! attempt, judged by the pure judges of `mapchaos_api::probe`. Behind the
//! [`ProbeRunner`] trait, so the reconciler's tests script the answers; the
//! operator and `mapchaos run` use [`HttpProber`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mapchaos_api::probe::{
    HttpMethod, MAX_PROBE_BODY, Probe, ProbeAttempt, judge_http, judge_prometheus,
};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Makes one probe attempt.
pub trait ProbeRunner: Send + Sync {
    /// Call the probe once and judge the answer (a timeout or a refused
    /// connection is a failed attempt, with the reason).
    fn attempt<'a>(&'a self, probe: &'a Probe) -> BoxFuture<'a, ProbeAttempt>;
}

/// Every attempt of a stage that runs once (before or after the storms):
/// up to `failureThreshold` attempts, `interval` apart, stopping at the
/// first that passes.
pub async fn until_pass(runner: &dyn ProbeRunner, probe: &Probe) -> Vec<ProbeAttempt> {
    let mut attempts = Vec::new();
    for n in 0..probe.failure_threshold.max(1) {
        if n > 0 {
            tokio::time::sleep(probe.interval.0).await;
        }
        let attempt = runner.attempt(probe).await;
        let passed = attempt.is_ok();
        attempts.push(attempt);
        if passed {
            break;
        }
    }
    attempts
}

/// [`until_pass`] for several probes at once, by name.
pub async fn stage(
    runner: &dyn ProbeRunner,
    probes: &[Probe],
) -> BTreeMap<String, Vec<ProbeAttempt>> {
    let calls = probes
        .iter()
        .map(|probe| async move { (probe.name.clone(), until_pass(runner, probe).await) });
    futures::future::join_all(calls).await.into_iter().collect()
}

/// Probes over HTTP and HTTPS (rustls, the system's root certificates).
#[derive(Clone)]
pub struct HttpProber {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Default for HttpProber {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProber {
    pub fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                // Plain http probes still work; https ones fail with a
                // certificate error naming the cause.
                tracing::warn!(%error, "no system root certificates: https probes cannot verify servers");
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        HttpProber {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// One request: the status and at most [`MAX_PROBE_BODY`] bytes of body.
    async fn call(
        &self,
        method: HttpMethod,
        url: &str,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let request = http::Request::builder()
            .method(method.as_str())
            .uri(url)
            .header(http::header::USER_AGENT, "mapchaos-probe")
            .body(Empty::new())
            .map_err(|error| format!("cannot build a request for {url}: {error}"))?;
        let method = method.as_str();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| format!("{method} {url}: {}", chain(&error)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_PROBE_BODY)
                .collect()
                .await
                .map_err(|error| format!("{method} {url}: reading the body: {error}"))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{method} {url}: no answer within {}",
                mapchaos_api::GoDuration(timeout)
            )),
        }
    }
}

/// An error and its causes, which hyper keeps apart ("client error
/// (Connect)" alone says nothing).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ProbeRunner for HttpProber {
    fn attempt<'a>(&'a self, probe: &'a Probe) -> BoxFuture<'a, ProbeAttempt> {
        Box::pin(async move {
            match (&probe.http, &probe.prometheus) {
                (Some(http), _) => {
                    let (status, body) = self.call(http.method, &http.url, http.timeout.0).await?;
                    judge_http(http, status, &body)
                }
                (None, Some(prometheus)) => {
                    let url = query_url(&prometheus.url, &prometheus.query);
                    let (status, body) = self
                        .call(HttpMethod::Get, &url, prometheus.timeout.0)
                        .await?;
                    judge_prometheus(prometheus, status, &body)
                }
                (None, None) => Err("the probe has neither http nor prometheus".into()),
            }
        })
    }
}

/// `{base}/api/v1/query?query=…`, the query percent-encoded.
pub fn query_url(base: &str, query: &str) -> String {
    let mut url = format!("{}/api/v1/query?query=", base.trim_end_matches('/'));
    for byte in query.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests;
