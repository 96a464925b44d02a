//! Steady-state probes (`spec.probes`): what the application must keep doing
//! while the map is stormed, how one probe's answer is judged, and how its
//! attempts add up to a verdict. No I/O: the operator and `mapchaos run`
//! make the HTTP calls and hand the answers to the pure judges here, so both
//! judge alike.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::report::Verdict;

/// The most probes one MapChaos may carry.
pub const MAX_PROBES: usize = 16;
/// The longest a single probe call may take.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest time between two attempts of one probe.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest time between two attempts of one probe.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(600);
/// The most consecutive failures a probe may tolerate.
pub const MAX_FAILURE_THRESHOLD: u32 = 10;
/// The longest probe name (a DNS label, so it reads well in Events).
pub const MAX_PROBE_NAME: usize = 63;
/// The longest `http.bodyMatch`.
pub const MAX_BODY_MATCH: usize = 1024;
/// The longest URL or PromQL query.
pub const MAX_PROBE_TEXT: usize = 4096;
/// The most bytes of a probe's response read (the rest is ignored), so a
/// huge answer cannot eat the operator's memory.
pub const MAX_PROBE_BODY: usize = 1 << 20;

/// One steady-state probe: exactly one of `http` or `prometheus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// The probe's name, unique in the MapChaos (a DNS label: lowercase
    /// letters, digits and '-'); Events and status name it.
    pub name: String,
    /// Probe an HTTP endpoint (the application's health URL, a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Probe a Prometheus instant query against a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
    /// When it runs: `before` the storms start (a failure means no storm
    /// starts), `during` the storms (every `interval`), `after` they end,
    /// or `continuous` (before, during and after).
    #[serde(default)]
    pub mode: ProbeMode,
    /// Time between attempts, as a Go duration (1s to 10m).
    #[serde(default = "default_interval")]
    pub interval: GoDuration,
    /// Consecutive failed attempts that fail the probe (1–10). Before and
    /// after the storms a probe is tried up to this many times, `interval`
    /// apart, until an attempt passes.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = MAX_FAILURE_THRESHOLD))]
    pub failure_threshold: u32,
    /// Stop the storms (they restore) as soon as this probe fails while
    /// they run. Only for `mode: during` or `continuous`.
    #[serde(default)]
    pub stop_on_failure: bool,
}

fn default_interval() -> GoDuration {
    GoDuration::from_secs(5)
}

fn default_failure_threshold() -> u32 {
    1
}

fn default_timeout() -> GoDuration {
    GoDuration::from_secs(5)
}

fn default_expected_status() -> Vec<u16> {
    vec![200]
}

/// When a probe runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProbeMode {
    /// Once before the storms start; a failure means none starts.
    Before,
    /// Every `interval` while the storms run.
    During,
    /// Once after every storm ended (and restored).
    After,
    /// Before, during and after.
    #[default]
    Continuous,
}

impl ProbeMode {
    /// Whether the probe runs in `stage`.
    pub fn covers(self, stage: ProbeStage) -> bool {
        match self {
            ProbeMode::Continuous => true,
            ProbeMode::Before => stage == ProbeStage::Before,
            ProbeMode::During => stage == ProbeStage::During,
            ProbeMode::After => stage == ProbeStage::After,
        }
    }
}

/// The part of a run a probe attempt belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ProbeStage {
    /// Before any storm started.
    Before,
    /// While the storms ran.
    During,
    /// After every storm ended.
    After,
}

impl ProbeStage {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStage::Before => "before",
            ProbeStage::During => "during",
            ProbeStage::After => "after",
        }
    }
}

/// An HTTP probe: it passes when the answer's status is expected and its
/// body contains `bodyMatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// The URL, `http://` or `https://` (https is checked against the
    /// system's root certificates).
    pub url: String,
    /// The request method: GET, HEAD or POST (with an empty body).
    #[serde(default)]
    pub method: HttpMethod,
    /// The statuses that pass (100–599).
    #[serde(default = "default_expected_status")]
    pub expected_status: Vec<u16>,
    /// A substring the response body must contain (plain text, compared
    /// byte for byte, not a regular expression); absent: any body passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_match: Option<String>,
    /// How long one call may take (up to 60s).
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,
}

/// An HTTP probe's method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
        }
    }
}

/// A Prometheus probe: an instant query (`GET {url}/api/v1/query`) whose
/// every sample must satisfy the comparison; an empty result fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusProbe {
    /// Prometheus's base URL (`http://prometheus.monitoring:9090`).
    pub url: String,
    /// The PromQL query, evaluated now.
    pub query: String,
    /// What every sample of the result must satisfy.
    pub comparison: Comparison,
    /// How long one query may take (up to 60s).
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,
}

/// `sample <op> value`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Comparison {
    /// One of <, <=, ==, !=, >=, >.
    pub op: CompareOp,
    /// The number each sample is compared with.
    pub value: f64,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CompareOp {
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = ">")]
    Greater,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Less => "<",
            CompareOp::LessOrEqual => "<=",
            CompareOp::Equal => "==",
            CompareOp::NotEqual => "!=",
            CompareOp::GreaterOrEqual => ">=",
            CompareOp::Greater => ">",
        }
    }
}

impl Comparison {
    /// Whether `sample` satisfies it; NaN satisfies nothing but `!=`.
    pub fn holds(&self, sample: f64) -> bool {
        match self.op {
            CompareOp::Less => sample < self.value,
            CompareOp::LessOrEqual => sample <= self.value,
            CompareOp::Equal => sample == self.value,
            CompareOp::NotEqual => sample != self.value,
            CompareOp::GreaterOrEqual => sample >= self.value,
            CompareOp::Greater => sample > self.value,
        }
    }
}

impl Probe {
    /// The one timeout its call has.
    pub fn timeout(&self) -> Duration {
        match (&self.http, &self.prometheus) {
            (Some(http), _) => http.timeout.0,
            (None, Some(prometheus)) => prometheus.timeout.0,
            (None, None) => default_timeout().0,
        }
    }

    /// What it calls, for messages: `GET http://…` or the query.
    pub fn describe(&self) -> String {
        match (&self.http, &self.prometheus) {
            (Some(http), _) => format!("{} {}", http.method.as_str(), http.url),
            (None, Some(p)) => format!(
                "{} {} {} at {}",
                p.query,
                p.comparison.op.as_str(),
                p.comparison.value,
                p.url
            ),
            (None, None) => "nothing".into(),
        }
    }
}

/// What one attempt found: `Ok` with what passed, `Err` with why it failed.
pub type ProbeAttempt = Result<String, String>;

/// Judge an HTTP answer.
pub fn judge_http(probe: &HttpProbe, status: u16, body: &[u8]) -> ProbeAttempt {
    if !probe.expected_status.contains(&status) {
        return Err(format!(
            "HTTP {status}, expected {}",
            list(&probe.expected_status)
        ));
    }
    if let Some(needle) = &probe.body_match
        && !contains(body, needle.as_bytes())
    {
        return Err(format!(
            "HTTP {status}, but the body does not contain {needle:?}"
        ));
    }
    Ok(format!("HTTP {status}"))
}

fn list(codes: &[u16]) -> String {
    let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
    codes.join(" or ")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Judge a Prometheus `/api/v1/query` answer (its HTTP status and body).
/// Every sample of a vector (or the scalar) must satisfy the comparison;
/// an empty vector fails, since it proves nothing.
pub fn judge_prometheus(probe: &PrometheusProbe, status: u16, body: &[u8]) -> ProbeAttempt {
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "Prometheus answered HTTP {status} with a body that is not JSON: {}",
            snippet(body)
        )
    })?;
    if answer["status"] != "success" {
        let error = answer["error"].as_str().unwrap_or("no error given");
        return Err(format!("Prometheus answered HTTP {status}: {error}"));
    }
    let data = &answer["data"];
    let samples: Vec<(String, f64)> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| {
                        let pairs: Vec<String> = m
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect();
                        format!("{{{}}}", pairs.join(","))
                    })
                    .unwrap_or_default();
                (labels, sample_value(&series["value"]))
            })
            .collect(),
        Some("scalar") => vec![("scalar".into(), sample_value(&data["result"]))],
        other => {
            return Err(format!(
                "the query gave a {} result; only an instant vector or a scalar can be compared",
                other.unwrap_or("missing")
            ));
        }
    };
    let Some(first) = samples.first() else {
        return Err(format!(
            "the query {:?} returned no samples (an empty result proves nothing)",
            probe.query
        ));
    };
    let op = probe.comparison.op.as_str();
    let limit = probe.comparison.value;
    if let Some((labels, value)) = samples.iter().find(|(_, v)| !probe.comparison.holds(*v)) {
        return Err(format!(
            "{labels} = {value}, not {op} {limit} ({} sample(s))",
            samples.len()
        ));
    }
    Ok(format!(
        "{} sample(s) {op} {limit} (first {} = {})",
        samples.len(),
        first.0,
        first.1
    ))
}

/// A sample's value: `[time, "text"]`; NaN when unreadable (so it fails).
fn sample_value(pair: &serde_json::Value) -> f64 {
    pair[1]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or(f64::NAN)
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    text.trim().to_owned()
}

/// Where a probe is in its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProbePhase {
    /// Not tried yet (or never could be: the run ended first).
    #[default]
    NotRun,
    /// Tried, and more attempts are to come.
    Running,
    /// Every stage it runs in ended without it failing.
    Passed,
    /// `failureThreshold` attempts in a row failed.
    Failed,
}

/// One probe's results in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    /// The probe's name.
    pub name: String,
    /// NotRun, Running, Passed or Failed.
    #[serde(default)]
    pub phase: ProbePhase,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Attempts that passed.
    #[serde(default)]
    pub successes: u32,
    /// Passed attempts in percent of all attempts, rounded down.
    #[serde(default)]
    pub success_percent: u32,
    /// Failed attempts since the last that passed.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The stage of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<ProbeStage>,
    /// When the last attempt was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// What the last attempt found.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ProbeStatus {
    pub fn new(name: &str) -> Self {
        ProbeStatus {
            name: name.to_owned(),
            phase: ProbePhase::NotRun,
            attempts: 0,
            successes: 0,
            success_percent: 0,
            consecutive_failures: 0,
            stage: None,
            last_probe_time: None,
            message: String::new(),
        }
    }

    /// Fold in one attempt made in `stage` at `at`; returns whether this
    /// attempt failed the probe (it had not failed before). A failed probe
    /// stays failed.
    pub fn record(
        &mut self,
        attempt: &ProbeAttempt,
        stage: ProbeStage,
        at: Time,
        failure_threshold: u32,
    ) -> bool {
        self.attempts = self.attempts.saturating_add(1);
        self.stage = Some(stage);
        self.last_probe_time = Some(at);
        match attempt {
            Ok(what) => {
                self.successes = self.successes.saturating_add(1);
                self.consecutive_failures = 0;
                self.message = format!("{}: {what}", stage.as_str());
            }
            Err(why) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.message = format!("{}: {why}", stage.as_str());
            }
        }
        self.success_percent = (u64::from(self.successes) * 100 / u64::from(self.attempts)) as u32;
        if self.phase == ProbePhase::Failed {
            return false;
        }
        if self.consecutive_failures >= failure_threshold.max(1) {
            self.phase = ProbePhase::Failed;
            true
        } else {
            self.phase = ProbePhase::Running;
            false
        }
    }

    /// The run ended: a probe that ran and never failed passed.
    pub fn finish(&mut self) {
        if self.phase == ProbePhase::Running {
            self.phase = ProbePhase::Passed;
        }
    }

    /// Whether its stage `stage` is over for it: it failed, or its last
    /// attempt there passed, or it failed `threshold` times in a row there.
    pub fn stage_settled(&self, stage: ProbeStage) -> bool {
        self.phase == ProbePhase::Failed
            || (self.stage == Some(stage) && self.consecutive_failures == 0)
    }
}

/// The run's verdict from the map's verdict and every probe's: a failed
/// probe fails the run (the map held, the application did not), and a pass
/// needs every probe to have passed; a probe that never ran proves nothing.
/// `None` while the map's verdict is unknown, unless a probe already failed.
pub fn combined_verdict(map: Option<Verdict>, probes: &[ProbeStatus]) -> Option<Verdict> {
    if probes.iter().any(|p| p.phase == ProbePhase::Failed) {
        return Some(Verdict::Fail);
    }
    match map {
        Some(Verdict::Pass) if probes.iter().any(|p| p.phase != ProbePhase::Passed) => {
            Some(Verdict::Inconclusive)
        }
        other => other,
    }
}

/// The names of the probes that failed, for messages.
pub fn failed_names(probes: &[ProbeStatus]) -> Vec<&str> {
    probes
        .iter()
        .filter(|p| p.phase == ProbePhase::Failed)
        .map(|p| p.name.as_str())
        .collect()
}

/// Why `url` cannot be probed, if it cannot: only `http://` and `https://`
/// URLs with a host, no whitespace, at most [`MAX_PROBE_TEXT`] bytes.
pub fn url_problem(url: &str) -> Option<String> {
    if url.len() > MAX_PROBE_TEXT {
        return Some(format!("is longer than {MAX_PROBE_TEXT} bytes"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Some(format!("{url:?} is not an http:// or https:// URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Some(format!("{url:?} names no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("{url:?} contains whitespace"));
    }
    None
}

/// Every problem with `probes`, as (field path under `spec.`, message).
pub fn problems(probes: &[Probe]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if probes.len() > MAX_PROBES {
        out.push((
            "probes".to_owned(),
            format!("{} probes, at most {MAX_PROBES}", probes.len()),
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, probe) in probes.iter().enumerate() {
        let at = |field: &str| format!("probes[{i}].{field}");
        let mut fail = |field: &str, message: String| out.push((at(field), message));
        let name_ok = !probe.name.is_empty()
            && probe.name.len() <= MAX_PROBE_NAME
            && probe
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !probe.name.starts_with('-')
            && !probe.name.ends_with('-');
        if !name_ok {
            fail(
                "name",
                format!(
                    "{:?} is not a DNS label (1-{MAX_PROBE_NAME} lowercase letters, digits or '-')",
                    probe.name
                ),
            );
        } else if let Some(first) = seen.insert(probe.name.as_str(), i) {
            fail(
                "name",
                format!("{:?} is also the name of probes[{first}]", probe.name),
            );
        }
        let timeout = match (&probe.http, &probe.prometheus) {
            (Some(_), Some(_)) => {
                fail(
                    "http",
                    "give exactly one of http or prometheus, not both".into(),
                );
                None
            }
            (None, None) => {
                fail("http", "give exactly one of http or prometheus".into());
                None
            }
            (Some(http), None) => {
                if let Some(why) = url_problem(&http.url) {
                    fail("http.url", why);
                }
                if http.expected_status.is_empty() {
                    fail("http.expectedStatus", "give at least one status".into());
                }
                for code in &http.expected_status {
                    if !(100..=599).contains(code) {
                        fail(
                            "http.expectedStatus",
                            format!("{code} is not an HTTP status (100-599)"),
                        );
                    }
                }
                if let Some(needle) = &http.body_match
                    && (needle.is_empty() || needle.len() > MAX_BODY_MATCH)
                {
                    fail(
                        "http.bodyMatch",
                        format!("must be 1 to {MAX_BODY_MATCH} bytes"),
                    );
                }
                Some(("http.timeout", http.timeout))
            }
            (None, Some(prometheus)) => {
                if let Some(why) = url_problem(&prometheus.url) {
                    fail("prometheus.url", why);
                }
                if prometheus.query.trim().is_empty() {
                    fail("prometheus.query", "must not be empty".into());
                } else if prometheus.query.len() > MAX_PROBE_TEXT {
                    fail(
                        "prometheus.query",
                        format!("is longer than {MAX_PROBE_TEXT} bytes"),
                    );
                }
                if !prometheus.comparison.value.is_finite() {
                    fail(
                        "prometheus.comparison.value",
                        "must be a finite number".into(),
                    );
                }
                Some(("prometheus.timeout", prometheus.timeout))
            }
        };
        if let Some((field, timeout)) = timeout
            && (timeout.0.is_zero() || timeout.0 > MAX_PROBE_TIMEOUT)
        {
            fail(field, format!("{timeout} is not above 0s and at most 60s"));
        }
        if !(MIN_PROBE_INTERVAL..=MAX_PROBE_INTERVAL).contains(&probe.interval.0) {
            fail(
                "interval",
                format!("{} is not between 1s and 10m", probe.interval),
            );
        }
        if !(1..=MAX_FAILURE_THRESHOLD).contains(&probe.failure_threshold) {
            fail(
                "failureThreshold",
                format!(
                    "{} is not between 1 and {MAX_FAILURE_THRESHOLD}",
                    probe.failure_threshold
                ),
            );
        }
        if probe.stop_on_failure && !probe.mode.covers(ProbeStage::During) {
            fail(
                "stopOnFailure",
                "stops the storms when the probe fails while they run; it needs mode during or \
                 continuous"
                    .into(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
