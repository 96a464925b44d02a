//! Checks a `MapChaosSpec` can run, naming the field at fault. The operator
//! turns these into a `Valid=False` condition and an Event; `mapchaos run`
//! prints them and exits 2.

use std::fmt;
use std::time::Duration;

use crate::budget::{StormShape, StormSite};
use crate::bytesize::ByteSize;
use crate::spec::{KeyDistribution, KeySource, MapChaosSpec, SelectionMode};

/// The most workers a storm may ask for per target.
pub const MAX_WORKERS: u32 = 1024;
/// The most requests a worker may pipeline.
pub const MAX_PIPELINE: u32 = 1024;
/// Values must hold the unique write id.
pub const MIN_VALUE_SIZE: u32 = 24;
/// And stay small enough that a storm cannot eat a pod's memory by accident.
pub const MAX_VALUE_SIZE: u32 = 1 << 20;
/// The most finished runs `status.runs` may keep.
pub const MAX_HISTORY_LIMIT: u32 = 100;
/// The longest storm a single run may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Key ids are 32-bit: the most keys one storm may hold.
pub const MAX_KEYS: u64 = u32::MAX as u64;
/// The longest synthetic key prefix.
pub const MAX_PREFIX_LEN: usize = 1024;
/// The fastest open-loop rate (ops/s per target); no map serves more, and a
/// rate is what paces, with the duration, how much a storm records.
pub const MAX_RATE: u64 = 100_000_000;
/// The longest search budget for one key: a check runs key after key, so
/// this bounds how long one contended key holds a checker thread.
pub const MAX_TIMEOUT_PER_KEY: Duration = Duration::from_secs(3600);
/// The memory budget of a storm when neither the spec
/// (`spec.storm.memoryBudget`) nor the runner (`mapchaos run
/// --memory-budget`, the sidecar's container limit) gives one.
pub const DEFAULT_MEMORY_BUDGET: ByteSize = ByteSize::gib(1);

/// A memory budget and where it came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: ByteSize,
    /// Where it came from ("--memory-budget", "spec.storm.memoryBudget",
    /// "the sidecar's container limit less the map's data").
    pub source: String,
}

impl MemoryBudget {
    pub fn new(bytes: ByteSize, source: impl Into<String>) -> Self {
        MemoryBudget {
            bytes,
            source: source.into(),
        }
    }
}

/// What a spec is validated against: the memory it may use, where its map
/// lives, and whether pods are selected (a cluster) or not (`mapchaos run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `None`: `spec.storm.memoryBudget`, else [`DEFAULT_MEMORY_BUDGET`].
    pub budget: Option<MemoryBudget>,
    pub site: StormSite,
    /// In a cluster every selection rule applies; locally the rule that an
    /// empty selector needs `mode: all` does not (there are no pods), every
    /// other one does, so a manifest the cluster would refuse fails here too.
    pub selects_pods: bool,
}

impl Limits {
    /// A cluster: the storm runs in a sidecar, next to its map.
    pub fn cluster() -> Self {
        Limits {
            budget: None,
            site: StormSite::IN_PROCESS,
            selects_pods: true,
        }
    }

    /// The budget that applies to `spec`.
    pub fn budget_for(&self, spec: &MapChaosSpec) -> MemoryBudget {
        self.budget
            .clone()
            .unwrap_or_else(|| match spec.storm.memory_budget {
                Some(bytes) => MemoryBudget::new(bytes, "spec.storm.memoryBudget"),
                None => MemoryBudget::new(DEFAULT_MEMORY_BUDGET, "the default memory budget"),
            })
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, as a user writes it (`spec.storm.workers`).
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for InvalidSpec {}

/// Parse a decimal fraction between 0 and 1 given as a string ("0.05").
pub fn parse_fraction(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && (0.0..=1.0).contains(&value)).then_some(value)
}

impl MapChaosSpec {
    /// Every reason this spec cannot run in a cluster; `Ok` when it can.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        self.validate_with(&Limits::cluster())
    }

    /// Every reason this spec cannot run within `limits`: the one validator
    /// of the operator, the sidecar and `mapchaos run`.
    pub fn validate_with(&self, limits: &Limits) -> Result<(), InvalidSpec> {
        let mut errors = Vec::new();
        self.check_selection(limits.selects_pods, &mut errors);
        self.check_storm(limits, &mut errors);
        self.check_probes(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(errors))
        }
    }

    /// The checks that matter for running the storm itself (everything but
    /// pod selection and scheduling), as a sidecar needs for a storm request.
    pub fn validate_storm(&self, limits: &Limits) -> Result<(), InvalidSpec> {
        let mut errors = Vec::new();
        self.check_storm(limits, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(errors))
        }
    }

    fn check_selection(&self, selects_pods: bool, errors: &mut Vec<FieldError>) {
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: format!("spec.{field}"),
                message,
            })
        };

        let selector = &self.selector;
        let selects_by_something = !selector.label_selectors.is_empty()
            || !selector.expression_selectors.is_empty()
            || !selector.annotation_selectors.is_empty()
            || !selector.pods.is_empty();
        if selects_pods && !selects_by_something && self.mode != SelectionMode::All {
            fail(
                "selector",
                "selects every pod; give labelSelectors, expressionSelectors, \
                 annotationSelectors or pods, or set mode: all to mean it"
                    .into(),
            );
        }
        for (i, requirement) in selector.expression_selectors.iter().enumerate() {
            let needs_values = match requirement.operator.as_str() {
                "In" | "NotIn" => true,
                "Exists" | "DoesNotExist" => false,
                other => {
                    fail(
                        &format!("selector.expressionSelectors[{i}].operator"),
                        format!(
                            "unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)"
                        ),
                    );
                    continue;
                }
            };
            if needs_values == requirement.values.is_empty() {
                fail(
                    &format!("selector.expressionSelectors[{i}].values"),
                    if needs_values {
                        format!("{} needs at least one value", requirement.operator)
                    } else {
                        format!("{} takes no values", requirement.operator)
                    },
                );
            }
        }

        match (self.mode, self.value.as_deref()) {
            (SelectionMode::One | SelectionMode::All, _) => {}
            (mode, None) => fail("value", format!("mode {mode:?} needs a value")),
            (SelectionMode::Fixed, Some(value)) => match value.trim().parse::<u64>() {
                Ok(n) if n >= 1 => {}
                _ => fail(
                    "value",
                    format!("{value:?} is not a whole number of pods (at least 1)"),
                ),
            },
            (_, Some(value)) => match value.trim().parse::<u64>() {
                Ok(n) if (1..=100).contains(&n) => {}
                _ => fail(
                    "value",
                    format!("{value:?} is not a percentage from 1 to 100"),
                ),
            },
        }
        if let Some(schedule) = &self.schedule
            && let Err(why) = crate::schedule::Schedule::parse(schedule)
        {
            fail(
                "schedule",
                format!("{schedule:?} is not a cron schedule: {why}"),
            );
        }
        if !(1..=MAX_HISTORY_LIMIT).contains(&self.history_limit) {
            fail(
                "historyLimit",
                format!(
                    "{} is out of range: keep 1 to {MAX_HISTORY_LIMIT} runs",
                    self.history_limit
                ),
            );
        }
    }

    fn check_probes(&self, errors: &mut Vec<FieldError>) {
        for (field, message) in crate::probe::problems(&self.probes) {
            errors.push(FieldError {
                field: format!("spec.{field}"),
                message,
            });
        }
    }

    fn check_storm(&self, limits: &Limits, errors: &mut Vec<FieldError>) {
        let before = errors.len();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: format!("spec.{field}"),
                message,
            })
        };
        if let Some(seed) = self.seed
            && seed > crate::resource::MAX_SEED
        {
            fail(
                "seed",
                format!(
                    "{seed} is over the limit of {} (2^53-1, the largest integer JSON carries exactly)",
                    crate::resource::MAX_SEED
                ),
            );
        }

        let duration = self.duration.as_duration();
        if duration.is_zero() {
            fail("duration", "must be longer than 0s".into());
        } else if duration > MAX_DURATION {
            fail(
                "duration",
                format!("{} is longer than the 24h maximum", self.duration),
            );
        }

        let storm = &self.storm;
        if !(1..=MAX_WORKERS).contains(&storm.workers) {
            fail(
                "storm.workers",
                format!("{} is not between 1 and {MAX_WORKERS}", storm.workers),
            );
        }
        if !(1..=MAX_PIPELINE).contains(&storm.pipeline) {
            fail(
                "storm.pipeline",
                format!("{} is not between 1 and {MAX_PIPELINE}", storm.pipeline),
            );
        }
        let mix = storm.mix;
        let total = [mix.del, mix.get, mix.set, mix.exists, mix.scan]
            .iter()
            .map(|w| u64::from(*w))
            .sum::<u64>();
        if total == 0 {
            fail(
                "storm.mix",
                "every weight is 0; give at least one operation a weight".into(),
            );
        } else if mix.del == 0 {
            fail(
                "storm.mix.del",
                "a concurrent-delete storm needs a del weight above 0".into(),
            );
        }

        if storm.rate > MAX_RATE {
            fail(
                "storm.rate",
                format!("{} is over the limit of {MAX_RATE} ops/s", storm.rate),
            );
        }
        let keys = &storm.keys;
        if keys.count == 0 {
            fail("storm.keys.count", "must be at least 1".into());
        } else if keys.count > MAX_KEYS {
            fail(
                "storm.keys.count",
                format!(
                    "{} is over the limit of {MAX_KEYS} keys (key ids are 32-bit)",
                    keys.count
                ),
            );
        }
        match keys.source {
            KeySource::Synthetic => {
                if keys.prefix.is_empty() {
                    fail(
                        "storm.keys.prefix",
                        "must not be empty: a synthetic storm would mix with the application's keys"
                            .into(),
                    );
                } else if keys.prefix.len() > MAX_PREFIX_LEN {
                    fail(
                        "storm.keys.prefix",
                        format!(
                            "is {} bytes, over the limit of {MAX_PREFIX_LEN} bytes",
                            keys.prefix.len()
                        ),
                    );
                }
                if !(0.0..=1.0).contains(&keys.preload) {
                    fail(
                        "storm.keys.preload",
                        format!("{} is not between 0 and 1", keys.preload),
                    );
                }
                if storm.restore {
                    fail(
                        "storm.restore",
                        "restores existing keys; it needs storm.keys.source: existing".into(),
                    );
                }
            }
            KeySource::Existing => {
                if keys.pattern.as_deref().is_none_or(str::is_empty) {
                    fail(
                        "storm.keys.pattern",
                        "is required with source: existing".into(),
                    );
                }
            }
        }
        match keys.distribution {
            KeyDistribution::Zipf if !(keys.zipf_exponent > 0.0 && keys.zipf_exponent <= 10.0) => {
                fail(
                    "storm.keys.zipfExponent",
                    format!("{} is not above 0 and at most 10", keys.zipf_exponent),
                );
            }
            KeyDistribution::Hotspot => {
                let hot = keys.hotspot;
                if !(hot.fraction > 0.0 && hot.fraction <= 1.0) {
                    fail(
                        "storm.keys.hotspot.fraction",
                        format!("{} is not above 0 and at most 1", hot.fraction),
                    );
                }
                if !(0.0..=1.0).contains(&hot.share) {
                    fail(
                        "storm.keys.hotspot.share",
                        format!("{} is not between 0 and 1", hot.share),
                    );
                }
            }
            _ => {}
        }
        if !(MIN_VALUE_SIZE..=MAX_VALUE_SIZE).contains(&keys.value_size) {
            fail(
                "storm.keys.valueSize",
                format!(
                    "{} is not between {MIN_VALUE_SIZE} and {MAX_VALUE_SIZE}",
                    keys.value_size
                ),
            );
        }

        if self.check.history && self.check.max_ops == 0 {
            fail(
                "check.maxOps",
                "must be at least 1 when check.history is on".into(),
            );
        }
        let timeout_per_key = self.check.timeout_per_key.as_duration();
        if timeout_per_key.is_zero() {
            fail("check.timeoutPerKey", "must be longer than 0s".into());
        } else if timeout_per_key > MAX_TIMEOUT_PER_KEY {
            fail(
                "check.timeoutPerKey",
                format!("{} is over the limit of 1h", self.check.timeout_per_key),
            );
        }
        if let Some(rate) = &self.abort.max_error_rate
            && parse_fraction(rate).is_none()
        {
            fail(
                "abort.maxErrorRate",
                format!("{rate:?} is not a decimal between 0 and 1"),
            );
        }
        if let Some(p99) = self.abort.max_p99_latency
            && p99.as_duration().is_zero()
        {
            fail("abort.maxP99Latency", "must be longer than 0s".into());
        }
        // The budget is judged on a spec whose fields are each in range.
        if errors.len() == before {
            self.check_memory(limits, errors);
        }
    }

    /// The storm's estimated memory against its budget: each field that
    /// alone would bring it within budget is named with the largest value
    /// that fits.
    fn check_memory(&self, limits: &Limits, errors: &mut Vec<FieldError>) {
        let budget = limits.budget_for(self);
        let shape = StormShape {
            storm: self.storm.clone(),
            check: self.check.clone(),
            duration: self.duration.as_duration(),
        };
        let footprint = shape.footprint(limits.site);
        let need = footprint.total();
        if need <= budget.bytes.0 {
            return;
        }
        let context = format!(
            "the storm would need about {} ({}), over the memory budget of {} ({})",
            ByteSize(need),
            footprint.breakdown(),
            budget.bytes,
            budget.source
        );
        let over = shape.over_budget(limits.site, budget.bytes.0);
        let mut named = false;
        for field in over.iter().filter(|o| o.limit.is_some()) {
            named = true;
            errors.push(FieldError {
                field: format!("spec.{}", field.field),
                message: format!("{field}: {context}"),
            });
        }
        if !named {
            errors.push(FieldError {
                field: "spec.storm.memoryBudget".into(),
                message: format!(
                    "{context}; no one field brings it within budget: give it more memory or shrink the storm"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::{LabelSelectorRequirement, PodSelector};

    fn valid() -> MapChaosSpec {
        MapChaosSpec {
            selector: PodSelector {
                label_selectors: BTreeMap::from([("app".into(), "cart".into())]),
                ..PodSelector::default()
            },
            mode: SelectionMode::FixedPercent,
            value: Some("50".into()),
            duration: crate::GoDuration::from_secs(60),
            storm: Default::default(),
            check: Default::default(),
            abort: Default::default(),
            probes: Vec::new(),
            schedule: None,
            concurrency_policy: Default::default(),
            history_limit: 10,
            dry_run: false,
            paused: false,
            seed: None,
        }
    }

    fn fields(spec: &MapChaosSpec) -> Vec<String> {
        spec.validate()
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_default_storm_with_a_selector_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn a_bad_schedule_or_history_limit_is_named_with_the_reason() {
        let mut spec = valid();
        spec.schedule = Some("*/5 * * *".into());
        spec.history_limit = 0;
        let error = spec.validate().unwrap_err().to_string();
        assert!(
            error.contains("spec.schedule: \"*/5 * * *\" is not a cron schedule: has 4 fields"),
            "{error}"
        );
        assert!(
            error.contains("spec.historyLimit: 0 is out of range"),
            "{error}"
        );
        spec.schedule = Some("*/5 * * * *".into());
        spec.history_limit = 100;
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn an_empty_selector_needs_mode_all() {
        let mut spec = valid();
        spec.selector = PodSelector::default();
        assert_eq!(fields(&spec), ["spec.selector"]);
        spec.mode = SelectionMode::All;
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut spec = valid();
        spec.value = Some("150".into());
        spec.duration = crate::GoDuration::from_secs(0);
        spec.storm.workers = 0;
        spec.storm.mix.del = 0;
        spec.storm.keys.value_size = 8;
        spec.abort.max_error_rate = Some("five percent".into());
        spec.selector
            .expression_selectors
            .push(LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Near".into(),
                values: vec![],
            });
        assert_eq!(
            fields(&spec),
            [
                "spec.selector.expressionSelectors[0].operator",
                "spec.value",
                "spec.duration",
                "spec.storm.workers",
                "spec.storm.mix.del",
                "spec.storm.keys.valueSize",
                "spec.abort.maxErrorRate",
            ]
        );
        let message = spec.validate().unwrap_err().to_string();
        assert!(
            message.contains("\"150\" is not a percentage from 1 to 100"),
            "{message}"
        );
    }

    #[test]
    fn existing_keys_need_a_pattern_and_restore_needs_existing_keys() {
        let mut spec = valid();
        spec.storm.restore = true;
        assert_eq!(fields(&spec), ["spec.storm.restore"]);
        spec.storm.keys.source = KeySource::Existing;
        assert_eq!(fields(&spec), ["spec.storm.keys.pattern"]);
        spec.storm.keys.pattern = Some("session:*".into());
        assert_eq!(spec.validate(), Ok(()));
    }

    fn local() -> Limits {
        Limits {
            selects_pods: false,
            ..Limits::cluster()
        }
    }

    #[test]
    fn a_local_run_checks_selection_but_needs_no_pods() {
        let mut spec = valid();
        spec.selector = PodSelector::default();
        spec.mode = SelectionMode::One;
        assert_eq!(fields(&spec), ["spec.selector"]);
        assert_eq!(spec.validate_with(&local()), Ok(()));
        // What the cluster refuses besides, a local run refuses too.
        spec.value = Some("150".into());
        spec.mode = SelectionMode::FixedPercent;
        spec.schedule = Some("every day".into());
        let errors: Vec<String> = spec
            .validate_with(&local())
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(errors, ["spec.value", "spec.schedule"]);
        spec.value = Some("50".into());
        spec.schedule = None;
        spec.storm.workers = 0;
        assert_eq!(
            spec.validate_storm(&local()).unwrap_err().0[0].field,
            "spec.storm.workers"
        );
    }

    #[test]
    fn a_storm_over_its_memory_budget_names_the_field_and_the_limit() {
        let mut spec = valid();
        spec.storm.keys.count = 1_000_000_000;
        let error = spec.validate().unwrap_err();
        let count = error
            .0
            .iter()
            .find(|e| e.field == "spec.storm.keys.count")
            .expect("the count is named");
        assert!(
            count
                .message
                .starts_with("1000000000 is over the limit of "),
            "{}",
            count.message
        );
        assert!(
            count
                .message
                .contains("over the memory budget of 1 GiB (the default memory budget)"),
            "{}",
            count.message
        );
        // The spec's own budget applies when the runner gives none...
        spec.storm.keys.count = 100_000;
        spec.storm.memory_budget = Some(ByteSize::mib(50));
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("(spec.storm.memoryBudget)"), "{error}");
        // ...and the runner's overrides it.
        let limits = Limits {
            budget: Some(MemoryBudget::new(ByteSize::gib(4), "--memory-budget")),
            ..Limits::cluster()
        };
        assert_eq!(spec.validate_with(&limits), Ok(()));
    }

    #[test]
    fn a_budget_too_small_for_any_storm_names_the_budget() {
        let mut spec = valid();
        spec.storm.memory_budget = Some(ByteSize::mib(1));
        let error = spec.validate().unwrap_err();
        assert_eq!(error.0.last().unwrap().field, "spec.storm.memoryBudget");
        assert!(
            error
                .to_string()
                .contains("over the memory budget of 1 MiB"),
            "{error}"
        );
    }

    #[test]
    fn hard_limits_hold_whatever_the_budget() {
        let roomy = Limits {
            budget: Some(MemoryBudget::new(ByteSize(u64::MAX), "test")),
            ..Limits::cluster()
        };
        type Case = (&'static str, fn(&mut MapChaosSpec));
        let cases: [Case; 4] = [
            ("spec.storm.keys.count", |s| {
                s.storm.keys.count = MAX_KEYS + 1
            }),
            ("spec.storm.keys.prefix", |s| {
                s.storm.keys.prefix = "p".repeat(MAX_PREFIX_LEN + 1)
            }),
            ("spec.storm.rate", |s| s.storm.rate = MAX_RATE + 1),
            ("spec.check.timeoutPerKey", |s| {
                s.check.timeout_per_key = crate::GoDuration::from_secs(3601)
            }),
        ];
        for (field, make) in cases {
            let mut spec = valid();
            make(&mut spec);
            let error = spec.validate_with(&roomy).unwrap_err();
            assert_eq!(error.0.len(), 1, "{error}");
            assert_eq!(error.0[0].field, field);
            assert!(error.0[0].message.contains("over the limit of"), "{error}");
        }
    }

    #[test]
    fn a_seed_must_fit_a_json_number_exactly() {
        let mut spec = valid();
        spec.seed = Some(crate::resource::MAX_SEED);
        assert_eq!(spec.validate(), Ok(()));
        spec.seed = Some(crate::resource::MAX_SEED + 1);
        assert_eq!(fields(&spec), ["spec.seed"]);
        // A storm request carries its seed too.
        assert_eq!(
            spec.validate_storm(&Limits::cluster()).unwrap_err().0[0].field,
            "spec.seed"
        );
    }

    #[test]
    fn probes_are_checked_for_the_cluster_and_for_a_local_run() {
        let mut spec = valid();
        spec.probes = vec![crate::probe::Probe {
            name: "health".into(),
            http: None,
            prometheus: None,
            mode: Default::default(),
            interval: crate::GoDuration::from_secs(5),
            failure_threshold: 1,
            stop_on_failure: false,
        }];
        assert_eq!(fields(&spec), ["spec.probes[0].http"]);
        let local = spec.validate_with(&local()).unwrap_err().to_string();
        assert!(
            local.contains("spec.probes[0].http: give exactly one of http or prometheus"),
            "{local}"
        );
    }

    #[test]
    fn fractions_are_decimals_between_0_and_1() {
        assert_eq!(parse_fraction("0.05"), Some(0.05));
        assert_eq!(parse_fraction("1"), Some(1.0));
        assert_eq!(parse_fraction("1.5"), None);
        assert_eq!(parse_fraction("NaN"), None);
        assert_eq!(parse_fraction("-0.1"), None);
    }
}
