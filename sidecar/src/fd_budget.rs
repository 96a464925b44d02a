//! The process's file descriptors, split between the two ports so neither
//! can starve the other: the HTTP port (probes, metrics, the storm API) gets
//! `--http-max-connections`, a reserve covers listeners, the runtime and
//! files, and the RESP port's `--max-clients` gets what is left of the
//! open-file limit. Like Redis, the sidecar first raises its soft limit
//! toward the hard one, and lowers `--max-clients` (with a warning) when
//! even that is not enough.

/// Descriptors kept for everything but client connections: the two
/// listeners, stdio, the runtime's epoll and eventfds, `/proc` reads.
pub const RESERVED: u64 = 64;

/// How many RESP clients fit in `limit` descriptors beside `http` HTTP
/// connections and [`RESERVED`]: `wanted`, or fewer. `Err` names the flags
/// to change when none fits.
pub fn resp_clients(limit: u64, wanted: usize, http: usize) -> Result<usize, String> {
    let room = limit.saturating_sub(RESERVED + http as u64);
    if room == 0 {
        return Err(format!(
            "the open-file limit ({limit}) leaves no descriptor for RESP clients beside \
             --http-max-connections ({http}) and {RESERVED} reserved; raise `ulimit -n` or \
             lower --http-max-connections"
        ));
    }
    Ok(usize::try_from(room).map_or(wanted, |room| wanted.min(room)))
}

/// Raise the soft open-file limit toward `wanted` (never above the hard
/// limit) and return the soft limit then in force; `None` where the platform
/// does not tell.
pub fn raise_open_files(wanted: u64) -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        #[allow(unsafe_code)]
        // SAFETY: getrlimit writes one rlimit into the struct we own.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        if read != 0 {
            return None;
        }
        if limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            #[allow(unsafe_code)]
            // SAFETY: setrlimit only reads the struct we pass.
            let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
            if set == 0 {
                return Some(raised.rlim_cur);
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = wanted;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_clients_get_what_http_and_the_reserve_leave() {
        assert_eq!(resp_clients(1_048_576, 10_000, 256), Ok(10_000));
        assert_eq!(resp_clients(1024, 10_000, 256), Ok(1024 - 256 - 64));
        assert_eq!(resp_clients(1024, 10, 256), Ok(10));
        let error = resp_clients(300, 10_000, 256).unwrap_err();
        assert!(error.contains("--http-max-connections (256)"), "{error}");
        assert!(error.contains("open-file limit (300)"), "{error}");
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn the_limit_is_read_and_never_lowered() {
        let now = raise_open_files(0).expect("glibc reports RLIMIT_NOFILE");
        assert!(now > 0);
        assert!(raise_open_files(now).unwrap() >= now);
    }
}
