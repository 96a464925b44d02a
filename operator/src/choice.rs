//! The seeded, reproducible parts of a run: the seed itself, how many pods
//! each mode takes, which pods, and the storm ids. Everything here is a
//! function of its inputs (SHA-256, never a process-random hasher), so the
//! same resource chooses the same pods across reconciles, restarts and
//! operator versions.

use mapchaos_api::resource::MAX_SEED;
use mapchaos_api::spec::SelectionMode;
use sha2::{Digest, Sha256};

use crate::selector::CandidatePod;

/// The first 8 bytes of SHA-256 over the parts, each length-prefixed so
/// ("ab","c") and ("a","bc") differ.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    let bytes = digest.finalize();
    u64::from_be_bytes(bytes[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// The seed of a resource without `spec.seed`: derived from its uid, so it
/// is stable for the resource's life and differs between resources, and at
/// most [`MAX_SEED`] so it survives JSON.
pub fn seed_from_uid(uid: &str) -> u64 {
    hash(&[b"mapchaos-seed", uid.as_bytes()]) & MAX_SEED
}

/// The seed of run `run`: the experiment's seed for run 1, then one derived
/// from it and the run number, so scheduled runs choose pods and draw
/// workloads afresh, yet each run is reproducible from `status.seed` and
/// its number.
pub fn run_seed(seed: u64, run: u32) -> u64 {
    if run <= 1 {
        return seed;
    }
    hash(&[b"mapchaos-run", &seed.to_be_bytes(), &run.to_be_bytes()]) & MAX_SEED
}

/// How many of `matching` eligible pods a mode storms. `value` has been
/// validated (a whole number; 1–100 for the percent modes).
///
/// - `one`: 1; `all`: every pod; `fixed`: `value`, or every pod when fewer match.
/// - `fixed-percent`: `value`% of the pods, rounded down, but at least one
///   (50% of 3 pods is 1; 10% of 5 pods is 1, not 0).
/// - `random-max-percent`: a percentage drawn from the seed between 1 and
///   `value` (Chaos Mesh draws from 0; an experiment that storms nothing
///   proves nothing), then as `fixed-percent`.
///
/// No pods match → 0, whatever the mode.
pub fn target_count(mode: SelectionMode, value: Option<&str>, matching: usize, seed: u64) -> usize {
    if matching == 0 {
        return 0;
    }
    let number = value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    let percent_of = |percent: u64| {
        let count = (matching as u128 * u128::from(percent.min(100)) / 100) as usize;
        count.clamp(1, matching)
    };
    match mode {
        SelectionMode::One => 1,
        SelectionMode::All => matching,
        SelectionMode::Fixed => usize::try_from(number)
            .unwrap_or(usize::MAX)
            .clamp(1, matching),
        SelectionMode::FixedPercent => percent_of(number),
        SelectionMode::RandomMaxPercent => percent_of(random_percent(number, seed)),
    }
}

/// The percentage `random-max-percent` uses: 1..=`max`, from the seed.
pub fn random_percent(max: u64, seed: u64) -> u64 {
    let max = max.clamp(1, 100);
    1 + hash(&[b"mapchaos-percent", &seed.to_be_bytes()]) % max
}

/// The `count` pods to storm: every pod gets a rank from the seed and its
/// uid alone, and the lowest ranks win. A pod's rank does not depend on the
/// other pods, so a pod joining or leaving changes the choice by at most
/// that pod (rendezvous hashing), and the same seed picks the same pods.
pub fn choose<'a>(pods: &[&'a CandidatePod], count: usize, seed: u64) -> Vec<&'a CandidatePod> {
    let mut ranked: Vec<(u64, &CandidatePod)> = pods
        .iter()
        .map(|pod| {
            let rank = hash(&[b"mapchaos-choice", &seed.to_be_bytes(), pod.uid.as_bytes()]);
            (rank, *pod)
        })
        .collect();
    ranked.sort_by(|(a, pa), (b, pb)| {
        a.cmp(b)
            .then_with(|| (&pa.namespace, &pa.name).cmp(&(&pb.namespace, &pb.name)))
    });
    ranked.into_iter().take(count).map(|(_, pod)| pod).collect()
}

/// The storm id of `pod` in run `run` of the resource with `uid`:
/// `{uid}-{run}-{12 hex of the pod's namespace, name and uid}`. It is the
/// same on every reconcile, so a retried PUT finds the storm it started
/// instead of starting a second; a replacement pod with the same name gets
/// a new id. Within the sidecar's rules: at most 128 of `[A-Za-z0-9._-]`.
pub fn storm_id(resource_uid: &str, run: u32, pod: &CandidatePod) -> String {
    let resource: String = resource_uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    let pod_hash = hash(&[
        b"mapchaos-pod",
        pod.namespace.as_bytes(),
        pod.name.as_bytes(),
        pod.uid.as_bytes(),
    ]);
    format!("{resource}-{run}-{:012x}", pod_hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<CandidatePod> {
        (0..n)
            .map(|i| CandidatePod {
                name: format!("cart-{i}"),
                namespace: "shop".into(),
                uid: format!("00000000-0000-0000-0000-{i:012}"),
                ..CandidatePod::default()
            })
            .collect()
    }

    fn names(chosen: &[&CandidatePod]) -> Vec<String> {
        chosen.iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn every_mode_with_no_pods_chooses_none() {
        for mode in [
            SelectionMode::One,
            SelectionMode::All,
            SelectionMode::Fixed,
            SelectionMode::FixedPercent,
            SelectionMode::RandomMaxPercent,
        ] {
            assert_eq!(target_count(mode, Some("50"), 0, 7), 0, "{mode:?}");
        }
    }

    #[test]
    fn every_mode_with_one_pod_chooses_it() {
        for (mode, value) in [
            (SelectionMode::One, None),
            (SelectionMode::All, None),
            (SelectionMode::Fixed, Some("3")),
            (SelectionMode::FixedPercent, Some("10")),
            (SelectionMode::RandomMaxPercent, Some("1")),
        ] {
            assert_eq!(target_count(mode, value, 1, 7), 1, "{mode:?}");
        }
    }

    #[test]
    fn modes_with_many_pods() {
        assert_eq!(target_count(SelectionMode::One, None, 10, 7), 1);
        assert_eq!(target_count(SelectionMode::All, None, 10, 7), 10);
        assert_eq!(target_count(SelectionMode::Fixed, Some("4"), 10, 7), 4);
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("50"), 10, 7),
            5
        );
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("100"), 10, 7),
            10
        );
    }

    #[test]
    fn a_fixed_value_above_the_matches_takes_every_pod() {
        assert_eq!(target_count(SelectionMode::Fixed, Some("5"), 3, 7), 3);
    }

    #[test]
    fn percentages_round_down_but_never_to_zero() {
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("50"), 3, 7),
            1
        );
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("66"), 3, 7),
            1
        );
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("67"), 3, 7),
            2
        );
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("10"), 5, 7),
            1
        );
        assert_eq!(
            target_count(SelectionMode::FixedPercent, Some("1"), 1000, 7),
            10
        );
    }

    #[test]
    fn random_max_percent_stays_within_its_bound_and_follows_the_seed() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let percent = random_percent(30, seed);
            assert!((1..=30).contains(&percent), "{percent}");
            assert_eq!(percent, random_percent(30, seed), "reproducible");
            seen.insert(percent);
            let count = target_count(SelectionMode::RandomMaxPercent, Some("30"), 100, seed);
            assert_eq!(count as u64, percent, "{seed}");
        }
        assert!(seen.len() > 20, "the seed spreads the percentage: {seen:?}");
        assert_eq!(random_percent(1, 99), 1);
    }

    #[test]
    fn the_same_seed_chooses_the_same_pods_whatever_their_order() {
        let pool = pods(10);
        let forward: Vec<&CandidatePod> = pool.iter().collect();
        let backward: Vec<&CandidatePod> = pool.iter().rev().collect();
        let first = names(&choose(&forward, 3, 42));
        assert_eq!(first.len(), 3);
        assert_eq!(first, names(&choose(&backward, 3, 42)));
        assert_eq!(first, names(&choose(&forward, 3, 42)));
        let others: Vec<Vec<String>> = (0..20).map(|s| names(&choose(&forward, 3, s))).collect();
        assert!(
            others.iter().any(|o| *o != first),
            "different seeds choose differently"
        );
    }

    #[test]
    fn a_pod_leaving_changes_the_choice_by_at_most_that_pod() {
        let pool = pods(10);
        let all: Vec<&CandidatePod> = pool.iter().collect();
        let chosen = names(&choose(&all, 3, 5));
        let unchosen = pool.iter().find(|p| !chosen.contains(&p.name)).unwrap();
        let fewer: Vec<&CandidatePod> = all
            .iter()
            .copied()
            .filter(|p| p.name != unchosen.name)
            .collect();
        assert_eq!(names(&choose(&fewer, 3, 5)), chosen);
    }

    #[test]
    fn seeds_come_from_the_uid_and_fit_json() {
        let a = seed_from_uid("5b0f6a2e-1111-4c8e-9c1e-000000000001");
        assert_eq!(a, seed_from_uid("5b0f6a2e-1111-4c8e-9c1e-000000000001"));
        assert_ne!(a, seed_from_uid("5b0f6a2e-1111-4c8e-9c1e-000000000002"));
        for i in 0..100 {
            assert!(seed_from_uid(&i.to_string()) <= MAX_SEED);
        }
    }

    #[test]
    fn storm_ids_are_stable_distinct_and_valid_for_the_sidecar() {
        let pool = pods(2);
        let uid = "5b0f6a2e-1111-4c8e-9c1e-2f9d3b7a0c44";
        let id = storm_id(uid, 1, &pool[0]);
        assert_eq!(id, storm_id(uid, 1, &pool[0]));
        assert!(
            id.starts_with("5b0f6a2e-1111-4c8e-9c1e-2f9d3b7a0c44-1-"),
            "{id}"
        );
        assert_ne!(id, storm_id(uid, 1, &pool[1]), "per pod");
        assert_ne!(id, storm_id(uid, 2, &pool[0]), "per run");
        let mut replacement = pool[0].clone();
        replacement.uid = "another".into();
        assert_ne!(id, storm_id(uid, 1, &replacement), "per pod incarnation");
        let odd = storm_id(&"x/y z".repeat(40), u32::MAX, &pool[0]);
        for id in [id, odd] {
            assert!(mapchaos_sidecar::storms::valid_id(&id), "{id}");
        }
    }
}
