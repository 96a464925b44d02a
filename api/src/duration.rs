//! Durations written as Kubernetes users write them: Go's `time.Duration`
//! syntax ("60s", "1m30s", "250ms", "1.5h").

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration in Go syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        GoDuration(Duration::from_millis(millis))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> Self {
        GoDuration(duration)
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (expected Go syntax such as \"60s\", \"1m30s\", \"250ms\")"
)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| DurationError {
            input: input.to_owned(),
            reason,
        };
        if input == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        if input.is_empty() {
            return Err(fail("empty"));
        }
        if input.starts_with('-') {
            return Err(fail("negative"));
        }
        let mut rest = input.strip_prefix('+').unwrap_or(input);
        let mut total_nanos: f64 = 0.0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| fail("missing unit"))?;
            if number_len == 0 {
                return Err(fail("expected a number"));
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| fail("bad number"))?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(fail("unknown unit (use ns, us, ms, s, m or h)")),
            };
            rest = &rest[unit_len..];
            total_nanos += number * nanos_per_unit;
        }
        if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
            return Err(fail("too large"));
        }
        Ok(GoDuration(Duration::from_nanos(total_nanos.round() as u64)))
    }
}

impl fmt::Display for GoDuration {
    /// The shortest exact form: "1h30m", "90s", "250ms", "0s".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if !nanos.is_multiple_of(1_000_000_000) {
            return match nanos {
                n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
                n if n % 1_000 == 0 => write!(f, "{}us", n / 1_000),
                n => write!(f, "{n}ns"),
            };
        }
        let secs = self.0.as_secs();
        let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(0|\\+?([0-9]+(\\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+)$",
            "description": "A duration in Go syntax, e.g. \"60s\", \"1m30s\", \"250ms\"."
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", 0),
            ("60s", 60_000),
            ("1m30s", 90_000),
            ("250ms", 250),
            ("1.5h", 5_400_000),
            ("2h45m10s", 9_910_000),
            ("+5s", 5_000),
        ];
        for (text, millis) in cases {
            let parsed: GoDuration = text.parse().unwrap();
            assert_eq!(parsed.0, Duration::from_millis(millis), "{text}");
        }
        assert_eq!(
            "1500us".parse::<GoDuration>().unwrap().0,
            Duration::from_micros(1500)
        );
    }

    #[test]
    fn refuses_bad_durations_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("-5s", "negative"),
            ("5", "missing unit"),
            ("5 s", "unknown unit"),
            ("5d", "unknown unit"),
            ("s", "expected a number"),
            ("1..2s", "bad number"),
        ] {
            let error = text.parse::<GoDuration>().unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["0s", "90s", "1h30m", "250ms", "1500us", "7ns", "1h0m1s"] {
            let parsed: GoDuration = text.parse().unwrap();
            let shown = parsed.to_string();
            assert_eq!(
                shown.parse::<GoDuration>().unwrap(),
                parsed,
                "{text} -> {shown}"
            );
        }
        assert_eq!(GoDuration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m30s");
    }
}
