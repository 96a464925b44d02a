//! What `mapchaos run` checks before any work starts, so bad input costs no
//! storm: the `--target` URL, that output files can be written, the flags
//! that size time or threads, and the memory budget the storm is held to.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use mapchaos_api::ByteSize;
use mapchaos_api::spec::MapChaosSpec;
use mapchaos_api::validate::MemoryBudget;
use mapchaos_sidecar::memory_limit::MemorySources;

/// The longest `--request-timeout`: a storm waits this long at most for one
/// reply before counting it failed.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The most checker threads `--check-threads` may ask for.
pub const MAX_CHECK_THREADS: usize = 1024;

/// A `--target` that is not a Redis URL, said before anything connects.
pub fn target_url(url: &str) -> Result<(), String> {
    let hint = "write redis://HOST:PORT (or unix:///path for a socket)";
    let scheme_ok = [
        "redis://",
        "rediss://",
        "unix://",
        "redis+unix://",
        "valkey://",
        "valkeys://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme));
    if !scheme_ok {
        return Err(format!("--target {url:?} is not a Redis URL: {hint}"));
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("--target {url:?} is not a Redis URL ({e}): {hint}"))
}

/// Whether `path` can take the file a flag writes at the end of the storm:
/// an existing file must be writable (it is not touched now), a new one
/// creatable (it is created and removed again).
pub fn output_path(flag: &str, path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(format!("{flag} {shown}: is a directory, not a file")),
        Ok(_) => OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("{flag} {shown}: cannot write it: {e}")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| format!("{flag} {shown}: cannot create it: {e}"))?;
            std::fs::remove_file(path)
                .map_err(|e| format!("{flag} {shown}: cannot remove the test file: {e}"))
        }
        Err(e) => Err(format!("{flag} {shown}: {e}")),
    }
}

/// `--request-timeout` between 1 ms and [`MAX_REQUEST_TIMEOUT`].
pub fn request_timeout(timeout: Duration) -> Result<(), String> {
    if timeout < Duration::from_millis(1) {
        return Err("--request-timeout must be at least 1ms".into());
    }
    if timeout > MAX_REQUEST_TIMEOUT {
        return Err(format!(
            "--request-timeout {timeout:?} is over the limit of 10m"
        ));
    }
    Ok(())
}

/// `--check-threads` up to [`MAX_CHECK_THREADS`].
pub fn check_threads(threads: usize) -> Result<(), String> {
    if threads > MAX_CHECK_THREADS {
        return Err(format!(
            "--check-threads {threads} is over the limit of {MAX_CHECK_THREADS}"
        ));
    }
    Ok(())
}

/// The memory budget a local storm is held to: `--memory-budget`, else the
/// manifest's `spec.storm.memoryBudget` (`None`: the validator reads it),
/// else half of what this machine or container has.
pub fn memory_budget(flag: Option<ByteSize>, spec: &MapChaosSpec) -> Option<MemoryBudget> {
    match (flag, spec.storm.memory_budget) {
        (Some(bytes), _) => Some(MemoryBudget::new(bytes, "--memory-budget")),
        (None, Some(_)) => None,
        (None, None) => {
            let mut budget = MemorySources::default().storm_budget();
            budget.source = format!("{}; set --memory-budget for another", budget.source);
            Some(budget)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_are_checked_without_connecting() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://h:6380/0",
        ] {
            assert_eq!(target_url(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "redis://127.0.0.1:notaport",
            "redis://127.0.0.1:99999",
            "",
        ] {
            let error = target_url(bad).unwrap_err();
            assert!(error.contains("is not a Redis URL"), "{bad}: {error}");
        }
    }

    #[test]
    fn output_paths_must_be_writable_files_and_are_left_as_found() {
        let dir = std::env::temp_dir().join(format!("mapchaos-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.json");
        assert_eq!(output_path("--history", &new), Ok(()));
        assert!(!new.exists(), "the probe file is removed");
        let existing = dir.join("old.json");
        std::fs::write(&existing, "kept").unwrap();
        assert_eq!(output_path("--history", &existing), Ok(()));
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "kept");
        let error = output_path("--history", &dir).unwrap_err();
        assert!(error.contains("is a directory"), "{error}");
        let error = output_path("--history", &dir.join("missing/h.json")).unwrap_err();
        assert!(
            error.starts_with("--history ") && error.contains("cannot create it"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn time_and_thread_flags_are_bounded() {
        assert!(request_timeout(Duration::ZERO).is_err());
        assert!(request_timeout(Duration::from_secs(5)).is_ok());
        assert!(
            request_timeout(Duration::from_secs(3600))
                .unwrap_err()
                .contains("over the limit of 10m")
        );
        assert!(check_threads(0).is_ok());
        assert!(check_threads(MAX_CHECK_THREADS + 1).is_err());
    }
}
