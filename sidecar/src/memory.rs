//! Process-level memory: resident set size from `/proc`, and handing freed
//! heap back to the operating system after a mass delete.

/// The process's resident set size in bytes, when the platform tells.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Ask the allocator to return free heap pages to the operating system.
/// The engine calls this after compacting, so that a mass delete shows up as
/// lower RSS and not only as lower live bytes.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers
    // from us and is documented as safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
