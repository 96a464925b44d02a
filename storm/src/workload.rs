//! What a storm does, decided from its spec and a seed: which operation each
//! worker issues next, on which key, with which value. Everything here is
//! pure and seeded, so a storm can be replayed.

use mapchaos_api::spec::{KeyDistribution, KeySpec, OpMix};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// The operations a storm issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StormOp {
    Del,
    Get,
    Set,
    Exists,
    /// A full SCAN iteration over the storm's keys.
    Scan,
}

impl StormOp {
    pub const ALL: [StormOp; 5] = [
        StormOp::Del,
        StormOp::Get,
        StormOp::Set,
        StormOp::Exists,
        StormOp::Scan,
    ];

    /// The metric label (`op`) and report name.
    pub fn name(self) -> &'static str {
        match self {
            StormOp::Del => "del",
            StormOp::Get => "get",
            StormOp::Set => "set",
            StormOp::Exists => "exists",
            StormOp::Scan => "scan",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Picks operations by the mix's weights.
#[derive(Debug, Clone)]
pub struct OpChooser {
    /// Cumulative weights in `StormOp::ALL` order.
    cumulative: [u64; 5],
}

impl OpChooser {
    /// `None` when every weight is 0.
    pub fn new(mix: &OpMix) -> Option<Self> {
        let weights = [mix.del, mix.get, mix.set, mix.exists, mix.scan];
        let mut cumulative = [0u64; 5];
        let mut total = 0u64;
        for (slot, weight) in cumulative.iter_mut().zip(weights) {
            total += u64::from(weight);
            *slot = total;
        }
        (total > 0).then_some(OpChooser { cumulative })
    }

    pub fn choose(&self, rng: &mut SmallRng) -> StormOp {
        let roll = rng.random_range(0..self.cumulative[4]);
        let index = self.cumulative.iter().position(|&c| roll < c).unwrap_or(4);
        StormOp::ALL[index]
    }
}

/// Picks key indexes in `0..count` by the spec's distribution. Index 0 is the
/// hottest key under `zipf` and the hot set is the lowest indexes under
/// `hotspot`.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform { count: u64 },
    Zipf { count: u64, zipf: Zipf<f64> },
    Hotspot { count: u64, hot: u64, share: f64 },
}

impl KeyChooser {
    /// `count` may be smaller than `spec.count` (an existing-keys storm takes
    /// the keys it finds). `count` must be at least 1.
    pub fn new(spec: &KeySpec, count: u64) -> Self {
        let count = count.max(1);
        match spec.distribution {
            KeyDistribution::Uniform => KeyChooser::Uniform { count },
            KeyDistribution::Zipf => match Zipf::new(count as f64, spec.zipf_exponent) {
                Ok(zipf) => KeyChooser::Zipf { count, zipf },
                Err(_) => KeyChooser::Uniform { count },
            },
            KeyDistribution::Hotspot => {
                let hot = ((count as f64 * spec.hotspot.fraction).round() as u64).clamp(1, count);
                KeyChooser::Hotspot {
                    count,
                    hot,
                    share: spec.hotspot.share,
                }
            }
        }
    }

    pub fn choose(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyChooser::Uniform { count } => rng.random_range(0..*count),
            KeyChooser::Zipf { count, zipf } => {
                let rank = zipf.sample(rng) as u64;
                rank.clamp(1, *count) - 1
            }
            KeyChooser::Hotspot { count, hot, share } => {
                if *hot == *count || rng.random::<f64>() < *share {
                    rng.random_range(0..*hot)
                } else {
                    rng.random_range(*hot..*count)
                }
            }
        }
    }
}

/// A worker's random source: the storm's seed and the worker's number give
/// the same sequence on every replay.
pub fn worker_rng(seed: u64, worker: u32) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ (u64::from(worker) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The name of synthetic key `index`.
pub fn synthetic_key(prefix: &str, index: u64) -> Vec<u8> {
    format!("{prefix}{index}").into_bytes()
}

/// Prefix of every value a storm writes; the unique write id follows in hex.
const VALUE_TAG: &[u8; 3] = b"mc:";
const VALUE_ID_LEN: usize = VALUE_TAG.len() + 16;

/// Overwrite `buffer` with the value carrying write id `id` (a
/// [`crate::ValueId`]), padded to `size` bytes (at least 19, to hold the id).
/// Workers reuse one buffer per pipeline slot, so SETs allocate nothing.
pub fn write_value(buffer: &mut Vec<u8>, id: u64, size: usize) {
    use std::io::Write as _;
    buffer.clear();
    buffer.extend_from_slice(VALUE_TAG);
    write!(buffer, "{id:016x}").expect("writing to a Vec cannot fail");
    buffer.resize(size.max(VALUE_ID_LEN), b'.');
}

/// The value carrying write id `id`, as a new buffer.
pub fn encode_value(id: u64, size: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(size.max(VALUE_ID_LEN));
    write_value(&mut value, id, size);
    value
}

/// The write id a value carries, or `None` for a value no storm wrote.
pub fn decode_value(value: &[u8]) -> Option<u64> {
    let hex = value.strip_prefix(VALUE_TAG)?.get(..16)?;
    if value[VALUE_ID_LEN..].iter().any(|&b| b != b'.') {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValueId;

    #[test]
    fn values_carry_their_write_id_and_nothing_else_decodes() {
        let id = ValueId::new(7, 123_456).0;
        let value = encode_value(id, 32);
        assert_eq!(value.len(), 32);
        assert_eq!(decode_value(&value), Some(id));
        assert_eq!(
            decode_value(&encode_value(id, 4)),
            Some(id),
            "short sizes still hold the id"
        );
        assert_eq!(decode_value(b"hello"), None);
        assert_eq!(decode_value(b"mc:zzzzzzzzzzzzzzzz"), None);
        let mut tampered = value.clone();
        tampered[31] = b'!';
        assert_eq!(decode_value(&tampered), None);
    }

    #[test]
    fn the_op_mix_follows_its_weights() {
        let chooser = OpChooser::new(&OpMix {
            del: 60,
            get: 25,
            set: 10,
            exists: 0,
            scan: 5,
        })
        .unwrap();
        let mut rng = worker_rng(42, 0);
        let mut counts = [0u32; 5];
        for _ in 0..100_000 {
            counts[chooser.choose(&mut rng).index()] += 1;
        }
        assert_eq!(counts[StormOp::Exists.index()], 0, "weight 0 never chosen");
        let share = |op: StormOp| f64::from(counts[op.index()]) / 100_000.0;
        assert!((share(StormOp::Del) - 0.60).abs() < 0.01, "{counts:?}");
        assert!((share(StormOp::Get) - 0.25).abs() < 0.01, "{counts:?}");
        assert!((share(StormOp::Scan) - 0.05).abs() < 0.01, "{counts:?}");
        assert!(
            OpChooser::new(&OpMix {
                del: 0,
                get: 0,
                set: 0,
                exists: 0,
                scan: 0
            })
            .is_none()
        );
    }

    #[test]
    fn key_choices_stay_in_range_and_follow_the_distribution() {
        let mut spec = KeySpec::default();
        let mut rng = worker_rng(1, 3);
        for distribution in [
            KeyDistribution::Uniform,
            KeyDistribution::Zipf,
            KeyDistribution::Hotspot,
        ] {
            spec.distribution = distribution;
            let chooser = KeyChooser::new(&spec, 1000);
            let mut hits = vec![0u32; 1000];
            for _ in 0..200_000 {
                hits[chooser.choose(&mut rng) as usize] += 1;
            }
            let top10: u32 = hits[..10].iter().sum();
            let share = f64::from(top10) / 200_000.0;
            match distribution {
                KeyDistribution::Uniform => assert!((share - 0.01).abs() < 0.005, "{share}"),
                // Zipf(1000, 0.99): the top 1% of keys take about 38% of operations.
                KeyDistribution::Zipf => assert!(share > 0.3 && share < 0.5, "{share}"),
                // 1% of keys take 90% of operations.
                KeyDistribution::Hotspot => assert!((share - 0.9).abs() < 0.01, "{share}"),
            }
        }
        let single = KeyChooser::new(&spec, 1);
        assert!((0..100).all(|_| single.choose(&mut rng) == 0));
    }

    #[test]
    fn the_same_seed_replays_the_same_choices() {
        let spec = KeySpec::default();
        let chooser = KeyChooser::new(&spec, 10_000);
        let draw = |seed| {
            let mut rng = worker_rng(seed, 5);
            (0..100)
                .map(|_| chooser.choose(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }
}
