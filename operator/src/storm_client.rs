//! The operator's side of the storm protocol: `PUT`, `GET` and `DELETE` of
//! `http://{podIP}:9464/v1/storms/{id}` on a target's sidecar, every one
//! signed for that target's pod with a fresh nonce (see
//! `mapchaos_api::signing`). HTTP/1 over hyper-util's client, the one kube
//! already links, so the operator carries no second HTTP stack.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mapchaos_api::signing::{
    NONCE_HEADER, PodIdentity, SIGNATURE_HEADER, SignedRequest, TARGET_HEADER, TARGET_UID_HEADER,
    TIMESTAMP_HEADER, new_nonce,
};
use mapchaos_api::storm::{StormRequest, StormStatus};

use crate::error::Error;
use crate::plan::{Endpoint, StormObservation};
use crate::signing_key::StormSigner;

/// The sidecar's HTTP port (its `--http-addr` default).
pub const SIDECAR_PORT: u16 = 9464;
/// How long one call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a `PUT` did on the sidecar.
#[derive(Debug, Clone, PartialEq)]
pub enum PutAnswer {
    /// 201: the storm started.
    Started(StormStatus),
    /// 200: the storm was known; its lease was renewed if it still runs.
    Existing(StormStatus),
}

impl PutAnswer {
    pub fn status(&self) -> &StormStatus {
        match self {
            PutAnswer::Started(status) | PutAnswer::Existing(status) => status,
        }
    }
}

/// Talks to sidecars.
#[derive(Clone)]
pub struct StormClient {
    http: Client<HttpConnector, Full<Bytes>>,
    signer: StormSigner,
    port: u16,
    timeout: Duration,
}

impl StormClient {
    pub fn new(signer: StormSigner) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CALL_TIMEOUT));
        connector.set_nodelay(true);
        StormClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            signer,
            port: SIDECAR_PORT,
            timeout: CALL_TIMEOUT,
        }
    }

    /// Use another sidecar port (tests, or a sidecar run with `--http-addr`).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn url(&self, ip: &str, path: &str) -> String {
        if ip.contains(':') {
            format!("http://[{ip}]:{}{path}", self.port)
        } else {
            format!("http://{ip}:{}{path}", self.port)
        }
    }

    /// Start the storm, or renew its lease (the same id and request).
    pub async fn put(
        &self,
        target: &Endpoint,
        id: &str,
        request: &StormRequest,
    ) -> Result<PutAnswer, Error> {
        let body = serde_json::to_vec(request).expect("a storm request always serialises");
        let (status, answer) = self.call(Method::PUT, target, id, body).await?;
        match status {
            StatusCode::CREATED => Ok(PutAnswer::Started(answer)),
            _ => Ok(PutAnswer::Existing(answer)),
        }
    }

    /// The storm's status; `None` when the sidecar does not know it.
    pub async fn get(&self, target: &Endpoint, id: &str) -> Result<Option<StormStatus>, Error> {
        self.call_allowing_404(Method::GET, target, id).await
    }

    /// Stop the storm (the sidecar then restores); `None` when unknown.
    pub async fn delete(&self, target: &Endpoint, id: &str) -> Result<Option<StormStatus>, Error> {
        self.call_allowing_404(Method::DELETE, target, id).await
    }

    /// A `GET` as the planner sees it.
    pub async fn observe(&self, target: &Endpoint, id: &str) -> StormObservation {
        match self.get(target, id).await {
            Ok(Some(status)) => StormObservation::Found(Box::new(status)),
            Ok(None) => StormObservation::NotFound,
            Err(error) => StormObservation::Unreachable(error.to_string()),
        }
    }

    /// A signed `GET` of any storm API `path` on `target`'s sidecar (a
    /// storm's history, say): the status and the body as they came.
    pub async fn get_raw(
        &self,
        target: &Endpoint,
        path: &str,
    ) -> Result<(StatusCode, Bytes), Error> {
        self.exchange(Method::GET, target, path, Vec::new()).await
    }

    /// `GET /v1/storms/{id}/report` (`…/report/timelines/{n}` with a cap):
    /// the storm's HTML page; a 4xx is [`Error::StormRefused`].
    pub async fn get_report(
        &self,
        target: &Endpoint,
        id: &str,
        max_timelines: Option<usize>,
    ) -> Result<Bytes, Error> {
        let path = match max_timelines {
            None => format!("/v1/storms/{id}/report"),
            Some(n) => format!("/v1/storms/{id}/report/timelines/{n}"),
        };
        let (status, body) = self.get_raw(target, &path).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(Error::StormRefused {
                method: "GET",
                url: self.url(&target.ip, &path),
                status: status.as_u16(),
                message: error_message(&body),
            })
        }
    }

    async fn call_allowing_404(
        &self,
        method: Method,
        target: &Endpoint,
        id: &str,
    ) -> Result<Option<StormStatus>, Error> {
        match self.call(method, target, id, Vec::new()).await {
            Ok((_, status)) => Ok(Some(status)),
            Err(Error::StormRefused { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Send one signed request and read a storm status.
    async fn call(
        &self,
        method: Method,
        target: &Endpoint,
        id: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, StormStatus), Error> {
        let method_name = method_name(&method);
        let path = format!("/v1/storms/{id}");
        let url = self.url(&target.ip, &path);
        let (status, bytes) = self.exchange(method, target, &path, body).await?;
        if !status.is_success() {
            return Err(Error::StormRefused {
                method: method_name,
                url,
                status: status.as_u16(),
                message: error_message(&bytes),
            });
        }
        let answer = serde_json::from_slice(&bytes).map_err(|e| Error::StormDecode {
            method: method_name,
            url,
            reason: e.to_string(),
        })?;
        Ok((status, answer))
    }

    /// Send one request, signed for `target`'s pod, and read the answer.
    async fn exchange(
        &self,
        method: Method,
        target: &Endpoint,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let method_name = method_name(&method);
        let url = self.url(&target.ip, path);
        let pod: PodIdentity = target.identity();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let nonce = new_nonce();
        let signature = self.signer.sign(&SignedRequest {
            method: method.as_str(),
            path,
            body: &body,
            timestamp,
            nonce: &nonce,
            target: &pod,
        });
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(NONCE_HEADER, nonce)
            .header(TARGET_HEADER, pod.target());
        if !pod.uid.is_empty() {
            builder = builder.header(TARGET_UID_HEADER, pod.uid.clone());
        }
        if !body.is_empty() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request =
            builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| Error::StormTransport {
                    method: method_name,
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| Error::StormTransport {
                    method: method_name,
                    url: url.clone(),
                    reason: error_chain(&e),
                })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::StormTransport {
                    method: method_name,
                    url: url.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::StormTimeout {
                method: method_name,
                url: url.clone(),
                seconds: self.timeout.as_secs(),
            })?
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "GET",
    }
}

/// The sidecar's `{"error": ...}` text, or the body as it came.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// An error and its causes on one line (hyper's top-level text alone is vague).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use mapchaos_api::GoDuration;
    use mapchaos_api::spec::{CheckSpec, StormSpec};
    use mapchaos_api::storm::StormPhase;

    use super::*;
    use crate::fixtures::{OTHER_KEY_HEX, local_target, sidecar};

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIFxeAr1Cv34j7/zur6yraUJpu+h+FcgKyFLP+ugFKwEn\n\
        -----END PRIVATE KEY-----\n";

    fn small_storm(duration: GoDuration) -> StormRequest {
        StormRequest {
            storm: StormSpec {
                workers: 2,
                ..StormSpec::default()
            },
            check: CheckSpec {
                max_ops: 20_000,
                ..CheckSpec::default()
            },
            abort: Default::default(),
            duration,
            seed: 7,
            lease: GoDuration::from_secs(30),
        }
    }

    async fn wait_final(client: &StormClient, id: &str) -> StormStatus {
        let here = local_target();
        for _ in 0..300 {
            let status = client.get(&here, id).await.unwrap().unwrap();
            if crate::plan::storm_settled(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("storm {id} did not finish in 15s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signed_storm_starts_renews_reports_and_stops() {
        let here = local_target();
        let signer = StormSigner::parse(PEM).unwrap();
        let (port, storms) = sidecar(&signer).await;
        let client = StormClient::new(signer).with_port(port);
        let id = "uid-1-abcdef012345";

        assert_eq!(client.get(&here, id).await.unwrap(), None);
        let started = client
            .put(&here, id, &small_storm(GoDuration::from_secs(30)))
            .await
            .unwrap();
        assert!(matches!(started, PutAnswer::Started(_)), "{started:?}");
        let again = client
            .put(&here, id, &small_storm(GoDuration::from_secs(30)))
            .await
            .unwrap();
        assert!(
            matches!(again, PutAnswer::Existing(_)),
            "a repeated PUT renews, never restarts"
        );
        assert!(!again.status().phase.is_final());

        let busy = client
            .put(
                &here,
                "another-storm",
                &small_storm(GoDuration::from_secs(1)),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&busy, Error::StormRefused { status: 409, message, .. } if message.contains(id)),
            "{busy}"
        );

        let stopping = client.delete(&here, id).await.unwrap().unwrap();
        assert_eq!(stopping.id, id);
        let stopped = wait_final(&client, id).await;
        assert_eq!(stopped.phase, StormPhase::Aborted);
        assert!(stopped.message.contains("DELETE"), "{}", stopped.message);
        assert!(stopped.report.is_some());
        assert!(matches!(
            client.observe(&here, id).await,
            StormObservation::Found(status) if status.phase == StormPhase::Aborted
        ));
        assert_eq!(client.delete(&here, "never-was").await.unwrap(), None);
        assert!(storms.wait_idle(Duration::from_secs(5)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_storm_completes_with_its_report() {
        let here = local_target();
        let signer = StormSigner::parse(PEM).unwrap();
        let (port, _storms) = sidecar(&signer).await;
        let client = StormClient::new(signer).with_port(port);
        let id = "uid-1-000000000001";
        client
            .put(&here, id, &small_storm(GoDuration::from_millis(300)))
            .await
            .unwrap();
        let done = wait_final(&client, id).await;
        assert_eq!(done.phase, StormPhase::Completed, "{}", done.message);
        let report = done.report.unwrap();
        assert_eq!(report.seed, 7);
        assert!(report.ops > 0);
        assert!(report.check.is_some(), "the history was checked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_signed_with_another_key_is_refused() {
        let here = local_target();
        let trusted = StormSigner::parse(PEM).unwrap();
        let (port, _storms) = sidecar(&trusted).await;
        let impostor = StormClient::new(StormSigner::parse(OTHER_KEY_HEX).unwrap()).with_port(port);
        let error = impostor
            .put(&here, "s", &small_storm(GoDuration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::StormRefused { status: 401, message, .. } if message.contains("bad signature")),
            "{error}"
        );
        let error = impostor.delete(&here, "s").await.unwrap_err();
        assert_eq!(error.metric_label(), "storm_refused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_signed_for_the_pod_and_fetch_the_history() {
        let here = local_target();
        let signer = StormSigner::parse(PEM).unwrap();
        let (port, _storms) = sidecar(&signer).await;
        let client = StormClient::new(signer).with_port(port);
        let id = "uid-1-000000000002";
        client
            .put(&here, id, &small_storm(GoDuration::from_millis(300)))
            .await
            .unwrap();
        let done = wait_final(&client, id).await;
        assert!(done.report.is_some(), "a signed GET reads the report");
        let (status, body) = client
            .get_raw(&here, &format!("/v1/storms/{id}/history"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let history: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(!history["events"].as_array().unwrap().is_empty());
        let page = client.get_report(&here, id, None).await.unwrap();
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains(&format!("storm {id}")));
        let trimmed = client.get_report(&here, id, Some(0)).await.unwrap();
        assert!(trimmed.starts_with(b"<!DOCTYPE html>"));
        let error = client
            .get_report(&here, "no-such-storm", None)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::StormRefused { status: 404, .. }),
            "{error}"
        );

        // The same sidecar, addressed as another pod (a stale pod IP now
        // another pod's, say): every call is refused, reads too.
        let elsewhere = Endpoint {
            pod: "cart-1".into(),
            uid: "uid-cart-1".into(),
            ..local_target()
        };
        let error = client.get(&elsewhere, id).await.unwrap_err();
        assert!(
            matches!(&error, Error::StormRefused { status: 401, message, .. }
                if message.contains("signed for pod shop/cart-1") && message.contains("shop/cart-0")),
            "{error}"
        );
        let error = client
            .put(&elsewhere, "s2", &small_storm(GoDuration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::StormRefused { status: 401, .. }),
            "{error}"
        );
        let replaced = Endpoint {
            uid: "uid-of-an-older-cart-0".into(),
            ..local_target()
        };
        let error = client.delete(&replaced, id).await.unwrap_err();
        assert!(
            matches!(&error, Error::StormRefused { status: 401, message, .. } if message.contains("uid")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_absent_sidecar_is_unreachable_not_a_hang() {
        let here = local_target();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = StormClient::new(StormSigner::parse(OTHER_KEY_HEX).unwrap()).with_port(port);
        let error = client.get(&here, "s").await.unwrap_err();
        assert_eq!(error.metric_label(), "storm_unreachable");
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
        assert!(matches!(
            client.observe(&here, "s").await,
            StormObservation::Unreachable(_)
        ));
    }

    #[test]
    fn ipv6_pod_ips_are_bracketed() {
        let client = StormClient::new(StormSigner::parse(OTHER_KEY_HEX).unwrap());
        assert_eq!(client.url("10.1.2.3", "/p"), "http://10.1.2.3:9464/p");
        assert_eq!(client.url("fd00::1", "/p"), "http://[fd00::1]:9464/p");
    }
}
