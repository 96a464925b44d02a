//! The sidecar's command line and environment: addresses, limits and logging.
//! Every flag has an environment variable so a pod spec can set it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mapchaos_api::signing::PodIdentity;

use crate::http_listener::HttpLimits;
use crate::resp::Limits;
use crate::server::ServerConfig;

/// The smallest `--finished-storms-max-bytes`.
pub const MIN_FINISHED_STORMS_BYTES: u64 = 1 << 20;

/// The smallest `--delete-log-max-bytes`: room for lines with long keys.
pub const MIN_DELETE_LOG_BYTES: u64 = 64 << 10;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Which map engine serves the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// The correct, sharded concurrent engine.
    Sharded,
    /// Deliberately broken, for tests and demos: reads come from a snapshot
    /// refreshed every `--lag-ms`, so deletes become visible late.
    Lagging,
}

/// `mapchaos sidecar`: the map service.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// Where the Redis-protocol (RESP2) listener binds. Pod-local by default:
    /// the application in the same pod reaches it on 127.0.0.1.
    #[arg(long, env = "MAPCHAOS_RESP_ADDR", default_value = "127.0.0.1:6379")]
    pub resp_addr: SocketAddr,

    /// Where the HTTP listener binds: /metrics, /healthz, /readyz and the
    /// signed storm API.
    #[arg(long, env = "MAPCHAOS_HTTP_ADDR", default_value = "0.0.0.0:9464")]
    pub http_addr: SocketAddr,

    /// Most HTTP connections open at once; more are answered 503 and closed.
    /// Counted apart from --max-clients, so neither port can take the
    /// other's file descriptors.
    #[arg(long, env = "MAPCHAOS_HTTP_MAX_CONNECTIONS", default_value_t = HttpLimits::default().max_connections)]
    pub http_max_connections: usize,

    /// Seconds an HTTP client gets to send a request's headers (from the
    /// connection's start or its previous request); slower ones are closed.
    #[arg(long, env = "MAPCHAOS_HTTP_HEADER_TIMEOUT_SECS", default_value_t = HttpLimits::default().header_timeout.as_secs())]
    pub http_header_timeout_secs: u64,

    /// Seconds an HTTP connection may move no byte before it is closed
    /// (kept-alive ones included).
    #[arg(long, env = "MAPCHAOS_HTTP_IDLE_TIMEOUT_SECS", default_value_t = HttpLimits::default().idle_timeout.as_secs())]
    pub http_idle_timeout_secs: u64,

    /// Seconds to read an HTTP request's body and answer it; past that the
    /// answer is 408 and the connection is closed.
    #[arg(long, env = "MAPCHAOS_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = HttpLimits::default().request_timeout.as_secs())]
    pub http_request_timeout_secs: u64,

    /// Most RESP clients connected at once; more are refused with
    /// "max number of clients reached".
    #[arg(long, env = "MAPCHAOS_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,

    /// Largest unprocessed request data one connection may buffer, in bytes
    /// (Redis's client-query-buffer-limit).
    #[arg(long, env = "MAPCHAOS_MAX_QUERY_BYTES", default_value_t = Limits::default().max_query_bytes)]
    pub max_query_bytes: usize,

    /// Largest bulk string (key or value) accepted, in bytes (Redis's proto-max-bulk-len).
    #[arg(long, env = "MAPCHAOS_MAX_BULK_LEN", default_value_t = Limits::default().max_bulk_len)]
    pub max_bulk_len: usize,

    /// Most arguments in one command.
    #[arg(long, env = "MAPCHAOS_MAX_MULTIBULK_LEN", default_value_t = Limits::default().max_multibulk_len)]
    pub max_multibulk_len: usize,

    /// Longest inline (telnet-style) command line, in bytes.
    #[arg(long, env = "MAPCHAOS_MAX_INLINE_LEN", default_value_t = Limits::default().max_inline_len)]
    pub max_inline_len: usize,

    /// Close client connections idle for this many seconds; 0 never closes
    /// them (Redis's `timeout 0`).
    #[arg(long, env = "MAPCHAOS_IDLE_TIMEOUT_SECS", default_value_t = 0)]
    pub idle_timeout_secs: u64,

    /// Number of engine shards (rounded up to a power of two). More shards
    /// mean less lock contention between concurrent clients.
    #[arg(long, env = "MAPCHAOS_SHARDS", default_value_t = 64)]
    pub shards: usize,

    /// The map engine. `lagging` is deliberately broken (stale reads) and
    /// exists to show that the race checker catches real bugs.
    #[arg(long, env = "MAPCHAOS_ENGINE", value_enum, default_value_t = EngineKind::Sharded)]
    pub engine: EngineKind,

    /// With `--engine lagging`: milliseconds between read-snapshot refreshes.
    #[arg(long, env = "MAPCHAOS_LAG_MS", default_value_t = 5)]
    pub lag_ms: u64,

    /// The operator's Ed25519 public key (64 hex characters). Every storm
    /// API call (PUT, GET and DELETE of /v1/storms/…, history included) must
    /// be signed with its private key; without it the storm API is disabled.
    #[arg(long, env = "MAPCHAOS_OPERATOR_PUBLIC_KEY")]
    pub operator_public_key: Option<String>,

    /// Bytes the finished storms' reports and histories may hold together
    /// (as serialised). Over it the oldest storm's history is dropped first,
    /// then whole storms, oldest first; a GET of a dropped storm answers 410
    /// naming this flag. The default is an eighth of the chart's 512 MiB limit.
    #[arg(long, env = "MAPCHAOS_FINISHED_STORMS_MAX_BYTES", default_value_t = crate::finished::DEFAULT_MAX_BYTES)]
    pub finished_storms_max_bytes: u64,

    /// Write one JSON line per delete the map performs (time, source, cause,
    /// client id and name, command, key, whether a value was removed) to this
    /// file, `-` for standard output. Off by default; the counts
    /// (`mapchaos_deletes_total`) are always kept. Lines are handed to a
    /// writer thread over a bounded queue: when it is full they are dropped
    /// and counted (`mapchaos_delete_log_dropped_total`), never waited for.
    #[arg(long, env = "MAPCHAOS_DELETE_LOG")]
    pub delete_log: Option<PathBuf>,

    /// Size at which the delete log is rotated (`FILE` → `FILE.1` …).
    #[arg(long, env = "MAPCHAOS_DELETE_LOG_MAX_BYTES", default_value_t = 64 << 20)]
    pub delete_log_max_bytes: u64,

    /// Rotated delete log files kept besides the current one (0: the file
    /// is started again when full); the log takes at most
    /// (this + 1) × --delete-log-max-bytes of disk.
    #[arg(long, env = "MAPCHAOS_DELETE_LOG_ROTATED_FILES", default_value_t = 2)]
    pub delete_log_rotated_files: u32,

    /// In the delete log, write each key's SHA-256 (`keySha256`) instead of
    /// the key. A hash, not a secret: a guessable key can be confirmed.
    #[arg(long, env = "MAPCHAOS_DELETE_LOG_REDACT_KEYS")]
    pub delete_log_redact_keys: bool,
    /// This pod's namespace (from the downward API: fieldRef
    /// metadata.namespace). Signed requests must name this pod; without
    /// --pod-namespace and --pod-name every signed request is refused.
    #[arg(long, env = "MAPCHAOS_POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// This pod's name (fieldRef metadata.name).
    #[arg(long, env = "MAPCHAOS_POD_NAME")]
    pub pod_name: Option<String>,

    /// This pod's uid (fieldRef metadata.uid). When set, signed requests
    /// must carry this uid, so one meant for a pod this one replaced (same
    /// name) is refused.
    #[arg(long, env = "MAPCHAOS_POD_UID")]
    pub pod_uid: Option<String>,

    /// The most memory one storm may use ("256Mi", "1Gi"). A storm estimated
    /// over it is refused (HTTP 422, naming the field to shrink and the
    /// largest value that fits). Without it: half of what the container's
    /// memory limit (cgroup v2 memory.max, v1 memory.limit_in_bytes) leaves
    /// over what the sidecar holds, the application's data included, read
    /// when each storm is asked for; half the machine's available memory
    /// when there is no limit. Never more than the limit leaves.
    #[arg(long, env = "MAPCHAOS_STORM_MEMORY_BUDGET", value_name = "SIZE")]
    pub storm_memory_budget: Option<mapchaos_api::ByteSize>,

    /// How long to let in-flight replies finish after SIGTERM before exiting.
    #[arg(long, env = "MAPCHAOS_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "MAPCHAOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (for example `info` or
    /// `mapchaos_sidecar=debug`).
    #[arg(long, env = "MAPCHAOS_LOG", default_value = "info")]
    pub log: String,
}

impl SidecarArgs {
    /// The delete log's settings, when it is on.
    pub fn delete_log_config(&self) -> Option<crate::audit::log::DeleteLogConfig> {
        self.delete_log
            .as_ref()
            .map(|path| crate::audit::log::DeleteLogConfig {
                path: path.clone(),
                max_bytes: self.delete_log_max_bytes,
                rotated_files: self.delete_log_rotated_files,
                redact_keys: self.delete_log_redact_keys,
            })
    }

    /// The RESP server's settings.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_clients: self.max_clients,
            limits: Limits {
                max_query_bytes: self.max_query_bytes,
                max_bulk_len: self.max_bulk_len,
                max_multibulk_len: self.max_multibulk_len,
                max_inline_len: self.max_inline_len,
            },
            idle_timeout: (self.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.idle_timeout_secs)),
        }
    }

    /// The HTTP listener's bounds.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.http_max_connections,
            header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            request_timeout: Duration::from_secs(self.http_request_timeout_secs),
        }
    }

    /// Who this sidecar is, for signed requests: `Ok(None)` when neither
    /// name nor namespace is set, `Err` when only one of them is or one is
    /// not a Kubernetes name.
    pub fn pod_identity(&self) -> Result<Option<PodIdentity>, String> {
        fn set(value: &Option<String>) -> Option<&str> {
            value.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        match (set(&self.pod_namespace), set(&self.pod_name)) {
            (None, None) => Ok(None),
            (Some(namespace), Some(name)) => {
                PodIdentity::parse_target(&format!("{namespace}/{name}"), set(&self.pod_uid))
                    .map(Some)
                    .ok_or_else(|| {
                        "--pod-namespace, --pod-name and --pod-uid must be Kubernetes names \
                         (letters, digits, '-', '.'; a uid also '_')"
                            .to_owned()
                    })
            }
            _ => Err("--pod-namespace and --pod-name (MAPCHAOS_POD_NAMESPACE, \
                      MAPCHAOS_POD_NAME) go together: set both, or neither"
                .to_owned()),
        }
    }

    /// Refuse settings that cannot work, with a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.http_max_connections == 0 {
            return Err("--http-max-connections must be at least 1".into());
        }
        for (flag, secs) in [
            ("--http-header-timeout-secs", self.http_header_timeout_secs),
            ("--http-idle-timeout-secs", self.http_idle_timeout_secs),
            (
                "--http-request-timeout-secs",
                self.http_request_timeout_secs,
            ),
        ] {
            if !(1..=86_400).contains(&secs) {
                return Err(format!("{flag} must be between 1 and 86400 (got {secs})"));
            }
        }
        self.pod_identity()?;
        if self.max_clients == 0 {
            return Err("--max-clients must be at least 1".into());
        }
        if self.shards == 0 || self.shards > 1 << 16 {
            return Err("--shards must be between 1 and 65536".into());
        }
        if self.max_bulk_len == 0 || self.max_bulk_len > self.max_query_bytes {
            return Err(format!(
                "--max-bulk-len ({}) must be at least 1 and at most --max-query-bytes ({})",
                self.max_bulk_len, self.max_query_bytes
            ));
        }
        if self.max_multibulk_len == 0 {
            return Err("--max-multibulk-len must be at least 1".into());
        }
        if self.engine == EngineKind::Lagging && self.lag_ms == 0 {
            return Err("--lag-ms must be at least 1".into());
        }
        if self.max_inline_len == 0 {
            return Err("--max-inline-len must be at least 1".into());
        }
        if self.delete_log.is_some() && self.delete_log_max_bytes < MIN_DELETE_LOG_BYTES {
            return Err(format!(
                "--delete-log-max-bytes ({}) must be at least {MIN_DELETE_LOG_BYTES} (64 KiB)",
                self.delete_log_max_bytes
            ));
        }
        if self.finished_storms_max_bytes < MIN_FINISHED_STORMS_BYTES {
            return Err(format!(
                "--finished-storms-max-bytes ({}) must be at least {MIN_FINISHED_STORMS_BYTES} \
                 (1 MiB): a smaller budget could not hold one storm's report",
                self.finished_storms_max_bytes
            ));
        }
        Ok(())
    }
}
