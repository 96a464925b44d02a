//! Process-level memory: resident set size from `/proc`, and handing freed
//! heap back to the operating system after a mass delete.
//!
//! Freed keys go back to the allocator, not to the kernel. The sidecar
//! samples its RSS every second and trims the heap when the process holds
//! much more than the map and the finished storms account for and has grown
//! since its last trim ([`HeapRelease`]). Deciding on RSS rather than on the
//! map's own high-water mark is what catches a load and a delete that both
//! fall between two samples: the RSS still shows the load.

/// The process's resident set size in bytes, when the platform tells.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Ask the allocator to return free heap pages to the operating system.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers
    // from us and is documented as safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// RSS beyond what is accounted that is never worth a trim: the runtime,
/// connection buffers and the binary itself live there.
const SLACK_BYTES: u64 = 16 << 20;
/// A fall in what is accounted since the last trim that makes another worth it.
const FREED_STEP_BYTES: u64 = 4 << 20;

/// When to trim the heap, from the RSS and the bytes the sidecar accounts for.
#[derive(Debug, Clone)]
pub struct HeapRelease {
    /// The RSS just after the last trim (or at start), lowered whenever the
    /// RSS is seen below it.
    floor: u64,
    /// The most the sidecar accounted for since the last trim.
    high: u64,
}

impl HeapRelease {
    /// Start from the current RSS.
    pub fn new(rss: u64) -> Self {
        HeapRelease {
            floor: rss,
            high: 0,
        }
    }

    /// Whether a trim is due: the process holds more than `accounted` (the
    /// map's and the finished storms' bytes) by more than the slack (16 MiB or
    /// a quarter, which the map's estimate and the runtime may take), and
    /// since the last trim either the RSS grew past the slack or what is
    /// accounted fell by more than 4 MiB (a delete). A heap that a trim could
    /// not shrink (fragmented) is not walked again every second.
    pub fn is_due(&self, rss: u64, accounted: u64) -> bool {
        let slack = SLACK_BYTES.max(accounted / 4);
        rss > accounted.saturating_add(slack)
            && (rss > self.floor.saturating_add(SLACK_BYTES)
                || self.high > accounted.saturating_add(FREED_STEP_BYTES))
    }

    /// Note one sample.
    fn observe(&mut self, rss: u64, accounted: u64) {
        self.floor = self.floor.min(rss);
        self.high = self.high.max(accounted);
    }

    /// Look at the RSS and trim if due (then start over from the RSS left).
    /// Returns whether it trimmed.
    pub fn tick(&mut self, accounted: u64) -> bool {
        let Some(rss) = resident_bytes() else {
            return false;
        };
        self.observe(rss, accounted);
        if !self.is_due(rss, accounted) {
            return false;
        }
        release_free_heap();
        self.floor = resident_bytes().unwrap_or(rss);
        self.high = accounted;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn a_mass_delete_is_due_even_when_the_map_never_reported_the_load() {
        // Started at 20 MB; loaded and deleted 100 MB between two samples:
        // the map now accounts for nothing, the RSS still shows the load.
        let release = HeapRelease::new(20 * MB);
        assert!(release.is_due(120 * MB, 0));
    }

    #[test]
    fn a_full_map_or_a_small_gap_is_not_due() {
        let release = HeapRelease::new(20 * MB);
        assert!(!release.is_due(120 * MB, 110 * MB), "the map holds it");
        assert!(!release.is_due(30 * MB, 0), "within the slack of the start");
        // A big map's estimate may be off by a few percent without a trim.
        assert!(!release.is_due(1200 * MB, 1000 * MB));
        assert!(release.is_due(1300 * MB, 1000 * MB));
    }

    #[test]
    fn a_delete_after_a_trim_during_the_load_is_still_due() {
        // A trim during the load (the map's estimate ran 17 MB short) left
        // the floor at the loaded size; the delete must still be seen.
        let mut release = HeapRelease::new(10 * MB);
        release.observe(53 * MB, 36 * MB);
        release.floor = 53 * MB;
        release.high = 36 * MB;
        release.observe(114 * MB, 97 * MB);
        release.floor = 114 * MB;
        release.high = 97 * MB;
        release.observe(126 * MB, 71 * MB);
        assert!(release.is_due(123 * MB, 0));
    }

    #[test]
    fn a_growing_map_is_not_trimmed_every_second() {
        let mut release = HeapRelease::new(10 * MB);
        for step in 1..10 {
            let accounted = step * 100 * MB;
            // RSS a fifth over the estimate, as connection buffers make it.
            let rss = accounted + accounted / 5;
            release.observe(rss, accounted);
            assert!(!release.is_due(rss, accounted), "step {step}");
        }
    }

    #[test]
    fn a_heap_a_trim_could_not_shrink_is_not_walked_again_until_it_grows() {
        // The last trim left 120 MB (fragmented) with 50 MB accounted.
        let release = HeapRelease::new(120 * MB);
        assert!(!release.is_due(125 * MB, 50 * MB));
        assert!(release.is_due(140 * MB, 50 * MB));
    }

    #[test]
    fn tick_trims_after_freeing_a_large_heap_and_raises_no_false_alarm_after() {
        let Some(start) = resident_bytes() else {
            return; // no /proc: nothing to measure
        };
        let mut release = HeapRelease::new(start);
        // Many small allocations, as keys are, which glibc keeps in its arenas.
        let blocks: Vec<Box<[u8]>> = (0..400_000)
            .map(|i| vec![i as u8; 200].into_boxed_slice())
            .collect();
        assert!(resident_bytes().unwrap() > start + 60 * MB);
        drop(blocks);
        assert!(release.tick(0), "80 MB freed, nothing accounted: trim");
        let after = resident_bytes().unwrap();
        assert!(
            after < start + 30 * MB,
            "RSS back near its start: {} MB from {} MB",
            after / MB,
            start / MB
        );
        assert!(!release.tick(0), "nothing grew since the trim");
    }
}
