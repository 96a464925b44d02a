//! The sidecar's Prometheus metrics. Names and labels are a public interface
//! (ARCHITECTURE.md): no label ever holds a key, an address or another
//! unbounded value.

use mapchaos_api::report::{AnomalyKind, ExposureKind};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets, 10 µs to ~2.6 s, by factors of 2.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(10e-6, 2.0, 19).expect("static bucket layout is valid")
}

/// Every metric the sidecar exports, registered in one registry.
pub struct SidecarMetrics {
    pub registry: Registry,
    /// `mapchaos_ops_total{op,source,outcome}`; `source` is `client` (the
    /// application's RESP traffic) or `storm`; `outcome` is `ok` or `error`.
    pub ops: IntCounterVec,
    /// `mapchaos_op_duration_seconds{op,source}`.
    pub op_duration: HistogramVec,
    /// `mapchaos_race_exposures_total{kind}`.
    pub race_exposures: IntCounterVec,
    /// `mapchaos_anomalies_total{kind}`.
    pub anomalies: IntCounterVec,
    /// `mapchaos_storm_active`: 1 while a storm runs.
    pub storm_active: IntGauge,
    /// `mapchaos_keys`: keys in the map.
    pub keys: IntGauge,
    /// `mapchaos_map_memory_bytes{kind}`: `live` (what live keys need),
    /// `held` (what the engine's structures occupy), `rss` (the process).
    pub map_memory: IntGaugeVec,
    /// `mapchaos_finished_storms_bytes`: what finished storms' reports and
    /// histories hold, as `--finished-storms-max-bytes` counts it.
    pub finished_storms_bytes: IntGauge,
    /// `mapchaos_delete_log_dropped_total`: delete log lines dropped because
    /// the writer fell behind (the map never waits for it).
    pub delete_log_dropped: IntCounter,
    /// `mapchaos_restored_keys_total`.
    pub restored_keys: IntCounter,
    /// `mapchaos_connected_clients`: open RESP connections.
    pub connected_clients: IntGauge,
    /// `mapchaos_rejected_connections_total{reason}`: `max_clients`, and
    /// `cross_protocol` (a command looked like HTTP; see `cross_protocol`).
    pub rejected_connections: IntCounterVec,
    /// `mapchaos_protocol_errors_total`: connections closed for a malformed frame or a limit.
    pub protocol_errors: IntCounter,
    /// `mapchaos_http_connections`: open connections to the HTTP port.
    pub http_connections: IntGauge,
    /// `mapchaos_http_dropped_connections_total{reason}`: HTTP connections
    /// refused (`max_connections`) or cut (`header_timeout`, `idle_timeout`,
    /// `request_timeout`).
    pub http_dropped: IntCounterVec,
}

impl SidecarMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let ops = IntCounterVec::new(
            Opts::new(
                "mapchaos_ops_total",
                "Map operations served, by command, source and outcome.",
            ),
            &["op", "source", "outcome"],
        )
        .expect("valid metric");
        let op_duration = HistogramVec::new(
            HistogramOpts::new(
                "mapchaos_op_duration_seconds",
                "Time to execute one map operation, by command and source.",
            )
            .buckets(latency_buckets()),
            &["op", "source"],
        )
        .expect("valid metric");
        let race_exposures = IntCounterVec::new(
            Opts::new(
                "mapchaos_race_exposures_total",
                "Pairs of truly concurrent operations on one key seen by storms, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let anomalies = IntCounterVec::new(
            Opts::new(
                "mapchaos_anomalies_total",
                "Consistency anomalies found by the checker, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let storm_active = IntGauge::new(
            "mapchaos_storm_active",
            "1 while a storm is running on this sidecar.",
        )
        .expect("valid metric");
        let keys = IntGauge::new("mapchaos_keys", "Keys in the map.").expect("valid metric");
        let map_memory = IntGaugeVec::new(
            Opts::new(
                "mapchaos_map_memory_bytes",
                "Memory of the map: live (what live keys need), held (what the engine occupies), rss (the process).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let finished_storms_bytes = IntGauge::new(
            "mapchaos_finished_storms_bytes",
            "Bytes the finished storms' reports and histories hold (bounded by --finished-storms-max-bytes).",
        )
        .expect("valid metric");
        let delete_log_dropped = IntCounter::new(
            "mapchaos_delete_log_dropped_total",
            "Delete log lines dropped because its writer fell behind (--delete-log).",
        )
        .expect("valid metric");
        let restored_keys = IntCounter::new(
            "mapchaos_restored_keys_total",
            "Keys deleted by a storm and put back afterwards.",
        )
        .expect("valid metric");
        let connected_clients = IntGauge::new(
            "mapchaos_connected_clients",
            "Open RESP client connections.",
        )
        .expect("valid metric");
        let rejected_connections = IntCounterVec::new(
            Opts::new(
                "mapchaos_rejected_connections_total",
                "RESP connections refused or dropped, by reason: max_clients, cross_protocol (a command looked like HTTP).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let http_connections = IntGauge::new(
            "mapchaos_http_connections",
            "Open connections to the sidecar's HTTP port.",
        )
        .expect("valid metric");
        let http_dropped = IntCounterVec::new(
            Opts::new(
                "mapchaos_http_dropped_connections_total",
                "HTTP connections refused or cut, by reason: max_connections, header_timeout, idle_timeout, request_timeout.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let protocol_errors = IntCounter::new(
            "mapchaos_protocol_errors_total",
            "RESP connections closed because of a malformed frame or an exceeded limit.",
        )
        .expect("valid metric");

        for collector in [
            Box::new(ops.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(op_duration.clone()),
            Box::new(race_exposures.clone()),
            Box::new(anomalies.clone()),
            Box::new(storm_active.clone()),
            Box::new(keys.clone()),
            Box::new(map_memory.clone()),
            Box::new(finished_storms_bytes.clone()),
            Box::new(delete_log_dropped.clone()),
            Box::new(restored_keys.clone()),
            Box::new(connected_clients.clone()),
            Box::new(rejected_connections.clone()),
            Box::new(protocol_errors.clone()),
            Box::new(http_connections.clone()),
            Box::new(http_dropped.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }

        // Every kind's series from the start, at 0: a counter that first appears
        // with its value already N (the first storm's report) is invisible to
        // increase()/rate(), so the anomaly alert and the exposure panels would miss
        // every sidecar's first storm.
        for kind in AnomalyKind::ALL {
            anomalies.with_label_values(&[kind.as_str()]);
        }
        for kind in ExposureKind::ALL {
            race_exposures.with_label_values(&[kind.as_str()]);
        }
        for reason in ["max_clients", "cross_protocol"] {
            rejected_connections.with_label_values(&[reason]);
        }
        for reason in [
            "max_connections",
            "header_timeout",
            "idle_timeout",
            "request_timeout",
        ] {
            http_dropped.with_label_values(&[reason]);
        }

        SidecarMetrics {
            registry,
            ops,
            op_duration,
            race_exposures,
            anomalies,
            storm_active,
            keys,
            map_memory,
            finished_storms_bytes,
            delete_log_dropped,
            restored_keys,
            connected_clients,
            rejected_connections,
            protocol_errors,
            http_connections,
            http_dropped,
        }
    }

    /// Count a finished storm's exposures, anomalies and restored keys.
    pub fn record_report(&self, report: &mapchaos_api::storm::StormReport) {
        if let Some(check) = &report.check {
            for (kind, count) in &check.exposures {
                self.race_exposures
                    .with_label_values(&[kind.as_str()])
                    .inc_by(*count);
            }
            for (kind, count) in &check.anomalies {
                self.anomalies
                    .with_label_values(&[kind.as_str()])
                    .inc_by(*count);
            }
        }
        self.restored_keys.inc_by(report.restored_keys);
    }

    /// The registry in Prometheus's text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for SidecarMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_anomaly_and_exposure_kind_is_exported_at_zero_before_any_storm() {
        let text = SidecarMetrics::new().render();
        for kind in AnomalyKind::ALL {
            let line = format!("mapchaos_anomalies_total{{kind=\"{}\"}} 0", kind.as_str());
            assert!(text.contains(&line), "missing {line} in:\n{text}");
        }
        for kind in ExposureKind::ALL {
            let line = format!(
                "mapchaos_race_exposures_total{{kind=\"{}\"}} 0",
                kind.as_str()
            );
            assert!(text.contains(&line), "missing {line} in:\n{text}");
        }
    }
}
