//! How much memory this process may still use: its container's limit (cgroup
//! v2 `memory.max`, v1 `memory.limit_in_bytes`), what the process already
//! holds (`VmRSS`, which counts the map's data), and the machine's available
//! memory when there is no limit. A storm's memory budget is derived from
//! these, so a storm can never grow the process into its container's OOM
//! killer and take the application's data with it.

use std::path::{Path, PathBuf};

use mapchaos_api::ByteSize;
use mapchaos_api::validate::{DEFAULT_MEMORY_BUDGET, MemoryBudget};

/// A cgroup v1 "no limit" is a huge page-rounded number; anything above this
/// is no limit.
const NO_LIMIT_ABOVE: u64 = 1 << 60;

/// Where the memory facts are read from; tests point it at a fake tree.
#[derive(Debug, Clone)]
pub struct MemorySources {
    /// The cgroup filesystem (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// `/proc/self/cgroup`: which cgroup this process is in.
    pub self_cgroup: PathBuf,
    /// `/proc/self/status`, for `VmRSS`.
    pub self_status: PathBuf,
    /// `/proc/meminfo`, for `MemAvailable`.
    pub meminfo: PathBuf,
}

impl Default for MemorySources {
    fn default() -> Self {
        MemorySources {
            cgroup_root: "/sys/fs/cgroup".into(),
            self_cgroup: "/proc/self/cgroup".into(),
            self_status: "/proc/self/status".into(),
            meminfo: "/proc/meminfo".into(),
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `Name:   123 kB` from a /proc file, in bytes.
fn proc_kib(path: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

impl MemorySources {
    /// The memory limit of this process's container, if it has one and it
    /// can be read: the innermost limit on its cgroup path (v2), or its
    /// memory controller's limit (v1); the cgroup root's files when
    /// `/proc/self/cgroup` cannot be read or names no such file (inside a
    /// container the root is the container's own cgroup).
    pub fn container_limit(&self) -> Option<u64> {
        let membership = std::fs::read_to_string(&self.self_cgroup).unwrap_or_default();
        let mut candidates: Vec<PathBuf> = Vec::new();
        for line in membership.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                // v2: a limit anywhere up the path applies; take each level.
                let mut dir = self.cgroup_root.join(path);
                loop {
                    candidates.push(dir.join("memory.max"));
                    if dir == self.cgroup_root || !dir.pop() {
                        break;
                    }
                }
            } else if controllers.split(',').any(|c| c == "memory") {
                candidates.push(
                    self.cgroup_root
                        .join("memory")
                        .join(path)
                        .join("memory.limit_in_bytes"),
                );
            }
        }
        candidates.push(self.cgroup_root.join("memory.max"));
        candidates.push(self.cgroup_root.join("memory/memory.limit_in_bytes"));
        candidates
            .iter()
            .filter_map(|path| read_number(path))
            .filter(|&limit| limit > 0 && limit < NO_LIMIT_ABOVE)
            .min()
    }

    /// What this process holds now (its resident set, the map included).
    pub fn resident(&self) -> Option<u64> {
        proc_kib(&self.self_status, "VmRSS")
    }

    /// The machine's available memory.
    pub fn available(&self) -> Option<u64> {
        proc_kib(&self.meminfo, "MemAvailable")
    }

    /// The most a storm may use in this process now: with a container limit,
    /// what the limit leaves over what the process already holds (the map's
    /// data among it), less a quarter of the limit kept free so the map and
    /// its clients keep room to grow; without one, half the machine's
    /// available memory; else the default.
    pub fn storm_budget(&self) -> MemoryBudget {
        let resident = self.resident().unwrap_or(0);
        if let Some(limit) = self.container_limit() {
            return MemoryBudget::new(
                ByteSize(limit.saturating_sub(resident).saturating_sub(limit / 4)),
                format!(
                    "the container's memory limit of {} less the {} this process holds and a quarter kept free",
                    ByteSize(limit),
                    ByteSize(resident)
                ),
            );
        }
        if let Some(available) = self.available() {
            return MemoryBudget::new(
                ByteSize(available / 2),
                format!(
                    "half of the machine's available memory of {}",
                    ByteSize(available)
                ),
            );
        }
        MemoryBudget::new(DEFAULT_MEMORY_BUDGET, "the default memory budget")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        dir: PathBuf,
        sources: MemorySources,
    }

    impl Fake {
        fn new(name: &str) -> Fake {
            let dir = std::env::temp_dir()
                .join(format!("mapchaos-memlimit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("cgroup")).unwrap();
            let sources = MemorySources {
                cgroup_root: dir.join("cgroup"),
                self_cgroup: dir.join("self_cgroup"),
                self_status: dir.join("status"),
                meminfo: dir.join("meminfo"),
            };
            std::fs::write(&sources.self_status, "Name:\tx\nVmRSS:\t  102400 kB\n").unwrap();
            std::fs::write(
                &sources.meminfo,
                "MemTotal: 8000000 kB\nMemAvailable:    4194304 kB\n",
            )
            .unwrap();
            Fake { dir, sources }
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.sources.cgroup_root.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_v2_limit_on_the_process_cgroup_sizes_the_budget() {
        let fake = Fake::new("v2");
        std::fs::write(&fake.sources.self_cgroup, "0::/kubepods/pod1/sidecar\n").unwrap();
        fake.write("memory.max", "max\n");
        fake.write("kubepods/memory.max", "max\n");
        fake.write("kubepods/pod1/sidecar/memory.max", "536870912\n");
        assert_eq!(fake.sources.container_limit(), Some(512 << 20));
        let budget = fake.sources.storm_budget();
        // 512 MiB − 100 MiB held − 128 MiB kept free.
        assert_eq!(budget.bytes, ByteSize(284 << 20));
        assert!(budget.source.contains("512 MiB"), "{}", budget.source);
    }

    #[test]
    fn a_v2_limit_higher_up_the_path_applies() {
        let fake = Fake::new("v2-parent");
        std::fs::write(&fake.sources.self_cgroup, "0::/pod/sidecar\n").unwrap();
        fake.write("pod/memory.max", "268435456\n");
        fake.write("pod/sidecar/memory.max", "max\n");
        assert_eq!(fake.sources.container_limit(), Some(256 << 20));
    }

    #[test]
    fn a_v1_limit_is_read_from_the_memory_controller() {
        let fake = Fake::new("v1");
        std::fs::write(
            &fake.sources.self_cgroup,
            "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n",
        )
        .unwrap();
        fake.write("memory/docker/abc/memory.limit_in_bytes", "1073741824\n");
        assert_eq!(fake.sources.container_limit(), Some(1 << 30));
        // v1's "unlimited" is a page-rounded 2^63.
        fake.write(
            "memory/docker/abc/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(fake.sources.container_limit(), None);
    }

    #[test]
    fn inside_a_container_the_root_files_are_its_own() {
        let fake = Fake::new("root");
        std::fs::write(&fake.sources.self_cgroup, "0::/\n").unwrap();
        fake.write("memory.max", "134217728\n");
        assert_eq!(fake.sources.container_limit(), Some(128 << 20));
    }

    #[test]
    fn without_a_limit_half_the_available_memory_is_the_budget() {
        let fake = Fake::new("none");
        assert_eq!(fake.sources.container_limit(), None);
        let budget = fake.sources.storm_budget();
        assert_eq!(budget.bytes, ByteSize(2 << 30));
        std::fs::remove_file(&fake.sources.meminfo).unwrap();
        assert_eq!(fake.sources.storm_budget().bytes, DEFAULT_MEMORY_BUDGET);
    }

    #[test]
    fn a_process_holding_most_of_its_limit_leaves_little_for_a_storm() {
        let fake = Fake::new("full");
        fake.write("memory.max", "209715200\n");
        // 100 MiB held of 200 MiB, 50 MiB kept free: 50 MiB for a storm.
        assert_eq!(fake.sources.storm_budget().bytes, ByteSize(50 << 20));
        std::fs::write(&fake.sources.self_status, "VmRSS:\t  204800 kB\n").unwrap();
        assert_eq!(fake.sources.storm_budget().bytes, ByteSize(0));
    }

    #[test]
    fn this_process_can_be_read() {
        let sources = MemorySources::default();
        assert!(sources.resident().is_some_and(|rss| rss > 0));
        assert!(sources.storm_budget().bytes.0 > 0);
    }
}
