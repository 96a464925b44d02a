//! An amount of memory as users write it: a Kubernetes quantity ("512Mi",
//! "2Gi", "1G"), the same with a `B` ("2GiB", "64MB"), or plain bytes.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub const fn mib(n: u64) -> Self {
        ByteSize(n * Self::MIB)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n * Self::GIB)
    }
}

/// Why a text is not an amount of memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an amount of memory (write bytes, or a number with Ki, Mi, Gi, Ti, k, M, G or T, optionally followed by B: \"512Mi\", \"2GiB\")"
)]
pub struct ParseByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ParseByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseByteSizeError(text.to_owned());
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let unit = unit.trim_start();
        let unit = unit.strip_suffix('B').unwrap_or(unit);
        let multiplier: u64 = match unit {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => Self::KIB,
            "Mi" => Self::MIB,
            "Gi" => Self::GIB,
            "Ti" => Self::GIB << 10,
            _ => return Err(error()),
        };
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(error());
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u64 = whole.parse().map_err(|_| error())?;
        let mut bytes = whole.checked_mul(multiplier).ok_or_else(error)?;
        if !fraction.is_empty() {
            // Exact decimal arithmetic: "1.5Gi" is 1.5 × 2^30, rounded down.
            let digits = fraction.len().min(18) as u32;
            let fraction: u64 = fraction[..digits as usize].parse().map_err(|_| error())?;
            let scaled = u128::from(fraction) * u128::from(multiplier) / 10u128.pow(digits);
            bytes = bytes
                .checked_add(u64::try_from(scaled).map_err(|_| error())?)
                .ok_or_else(error)?;
        }
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    /// Binary units, exact when the amount is a whole number of them, else
    /// one decimal ("1.5 GiB"); small amounts in bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, size) in [
            ("TiB", Self::GIB << 10),
            ("GiB", Self::GIB),
            ("MiB", Self::MIB),
            ("KiB", Self::KIB),
        ] {
            if bytes >= size {
                return if bytes.is_multiple_of(size) {
                    write!(f, "{} {unit}", bytes / size)
                } else {
                    write!(f, "{:.1} {unit}", bytes as f64 / size as f64)
                };
            }
        }
        write!(f, "{bytes} B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)? ?([kKMGT]|Ki|Mi|Gi|Ti)?B?$",
            "description": "An amount of memory: bytes, or a quantity such as \"512Mi\", \"2Gi\" or \"2GiB\"."
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
    fn quantities_parse_as_kubernetes_and_people_write_them() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512Mi", 512 << 20),
            ("2Gi", 2 << 30),
            ("2GiB", 2 << 30),
            ("2 GiB", 2 << 30),
            ("1G", 1_000_000_000),
            ("64MB", 64_000_000),
            ("10k", 10_000),
            ("1.5Gi", 3 << 29),
            ("1Ti", 1 << 40),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in [
            "",
            "Mi",
            "2 gigs",
            "-1",
            "1.Gi",
            ".5Gi",
            "99999999999999999999",
            "20000000Ti",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_print_in_binary_units() {
        assert_eq!(ByteSize(2 << 30).to_string(), "2 GiB");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize::mib(64).to_string(), "64 MiB");
    }

    #[test]
    fn it_travels_as_a_string_of_bytes() {
        let json: ByteSize = serde_json::from_str("\"256Mi\"").unwrap();
        assert_eq!(json, ByteSize::mib(256));
        assert_eq!(serde_json::to_string(&json).unwrap(), "\"268435456\"");
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"256 megs\"")
                .unwrap_err()
                .to_string(),
            ParseByteSizeError("256 megs".into()).to_string()
        );
    }
}
