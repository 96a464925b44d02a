//! Container probes (httpGet, tcpSocket, exec): one attempt against the pod, and the
//! success/failure thresholds that turn attempts into a probe result.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Where probes reach the container: its pod's address and namespaces, its env for exec.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    pub pod_ip: Ipv4Addr,
    /// A process holding the pod's namespaces (the pod's pause process).
    pub sandbox_pid: u32,
    pub env: Vec<(String, String)>,
}

/// The timing fields of a probe, with the API's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.map_or(default, |v| u64::try_from(v).unwrap_or(default)))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Consecutive-result counting: the result flips only after `success_threshold` successes
/// or `failure_threshold` failures in a row.
#[derive(Clone, Debug)]
pub struct Tracker {
    timing: Timing,
    result: bool,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// `initial` is the result before any attempt; as in the kubelet, readiness and startup
    /// start `false`, liveness `true`.
    pub fn new(timing: Timing, initial: bool) -> Self {
        Self {
            timing,
            result: initial,
            successes: 0,
            failures: 0,
        }
    }

    #[cfg(test)]
    pub fn result(&self) -> bool {
        self.result
    }

    /// Records one attempt; returns the new result when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if !self.result && self.successes >= self.timing.success_threshold {
                self.result = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.result && self.failures >= self.timing.failure_threshold {
                self.result = false;
                return Some(false);
            }
            // A probe that never succeeded still has to report failure eventually (liveness
            // starts "true", startup starts "false" and fails the container at the threshold).
            if !self.result && self.failures == self.timing.failure_threshold {
                return Some(false);
            }
        }
        None
    }
}

/// Resolves a probe port: a number, or the name of one of the container's ports.
pub fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no container port named {name:?}"))
        }
    }
}

/// One probe attempt. `Err` carries the message the kubelet would put in an Unhealthy
/// event.
pub async fn attempt(
    probe: &Probe,
    container: &Container,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        if let Some(http) = &probe.http_get {
            let port = port(&http.port, container)?;
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                return Err("HTTPS probes are not supported by the e2e node agent".to_owned());
            }
            let host = http
                .host
                .clone()
                .unwrap_or_else(|| target.pod_ip.to_string());
            let path = http.path.as_deref().unwrap_or("/");
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            http_get(&host, port, path, &headers).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = port(&tcp.port, container)?;
            let host = tcp
                .host
                .clone()
                .unwrap_or_else(|| target.pod_ip.to_string());
            TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(exec) = &probe.exec {
            exec_in_pod(target, exec.command.as_deref().unwrap_or(&[])).await
        } else {
            Err("probe has no supported handler (httpGet, tcpSocket, exec)".to_owned())
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get {url:?}: dial tcp: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.20\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let code = status_code(&head).ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// `HTTP/1.1 503 Service Unavailable` → 503.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

async fn exec_in_pod(target: &ProbeTarget, command: &[String]) -> Result<(), String> {
    if command.is_empty() {
        return Err("exec probe has no command".to_owned());
    }
    let pid = target.sandbox_pid.to_string();
    let out = Command::new("nsenter")
        .args(["--target", &pid, "--net", "--mount", "--uts", "--"])
        .args(command)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("exec probe: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "exec probe {command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_match_the_api() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn readiness_flips_after_thresholds_of_consecutive_results() {
        let mut t = Tracker::new(timing(2, 3), false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.result());
    }

    #[test]
    fn liveness_fails_after_failure_threshold() {
        let mut t = Tracker::new(timing(1, 2), true);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn startup_probe_that_never_succeeds_reports_failure_once() {
        let mut t = Tracker::new(timing(1, 2), false);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
    }

    #[test]
    fn named_ports_resolve_through_container_ports() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("metrics".into()),
                container_port: 9464,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        assert_eq!(port(&IntOrString::String("metrics".into()), &c), Ok(9464));
        assert_eq!(port(&IntOrString::Int(80), &c), Ok(80));
        assert!(port(&IntOrString::String("http".into()), &c).is_err());
    }

    #[test]
    fn status_line_parses() {
        assert_eq!(
            status_code(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.0 200 OK\r\nServer: x\r\n"), Some(200));
        assert_eq!(status_code(b"garbage"), None);
    }
}
