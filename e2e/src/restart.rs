//! When a stopped container runs again: the pod's restartPolicy and the kubelet's
//! exponential crash back-off (immediate first restart, then 10s doubling up to 5 minutes).

use std::time::Duration;

const INITIAL: Duration = Duration::from_secs(10);
const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long without crashing starts its back-off afresh.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether a container that exited with `exit_code` is started again under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The delay before restarting after the `crashes`-th consecutive crash (1-based).
pub fn delay(crashes: u32) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let doublings = (crashes - 2).min(16);
    INITIAL.saturating_mul(1 << doublings).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_is_immediate_then_doubles_from_ten_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(1000), MAX);
    }

    #[test]
    fn restart_policy_decides_by_exit_code() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 137));
        assert!(!should_restart("Never", 1));
    }
}
