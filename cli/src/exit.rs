//! Exit statuses, the same for every subcommand that judges a storm: 0 pass,
//! 1 anomalies, 2 bad input, 3 inconclusive, 4 could not run, 5 aborted by
//! an abort condition, 7 a steady-state probe failed (the map did not), 8 a
//! `before` probe failed so no storm ran; a run stopped by a signal exits
//! 128 + its number, or 6 when forced out by a third.

use std::fmt::Display;
use std::process::ExitCode;

use mapchaos_api::Verdict;

/// How the process ends, and the message to print on stderr first.
#[derive(Debug)]
pub struct Exit {
    code: u8,
    message: Option<String>,
}

impl Exit {
    pub const PASS: u8 = 0;
    pub const ANOMALIES: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const INCONCLUSIVE: u8 = 3;
    pub const CANNOT_RUN: u8 = 4;
    pub const ABORTED: u8 = 5;
    /// A third signal ended the run at once, its restore unfinished.
    pub const FORCED: u8 = 6;
    /// A steady-state probe failed; the map's own verdict was no FAIL.
    pub const PROBE_FAILED: u8 = 7;
    /// A `before` probe failed: no storm ran.
    pub const NOT_STARTED: u8 = 8;

    pub fn success() -> Self {
        Exit {
            code: Self::PASS,
            message: None,
        }
    }

    pub fn bad_input(message: impl Display) -> Self {
        Exit {
            code: Self::BAD_INPUT,
            message: Some(message.to_string()),
        }
    }

    pub fn cannot_run(message: impl Display) -> Self {
        Exit {
            code: Self::CANNOT_RUN,
            message: Some(message.to_string()),
        }
    }

    /// The map held (or proved nothing) but a probe failed.
    pub fn probe_failed() -> Self {
        Exit {
            code: Self::PROBE_FAILED,
            message: None,
        }
    }

    /// A `before` probe failed, so no storm ran.
    pub fn not_started(message: impl Display) -> Self {
        Exit {
            code: Self::NOT_STARTED,
            message: Some(message.to_string()),
        }
    }

    /// Stopped by `signal` (after restoring and printing the report): the
    /// status a shell gives a process the signal ended.
    pub fn signalled(signal: crate::signals::Signal) -> Self {
        Exit {
            code: 128 + signal.number(),
            message: None,
        }
    }

    /// Print the message, if any, and give the status.
    pub fn report(self) -> ExitCode {
        if let Some(message) = self.message {
            eprintln!("error: {message}");
        }
        ExitCode::from(self.code)
    }
}

/// The status a verdict gives.
pub fn exit_for_verdict(verdict: Verdict) -> Exit {
    let code = match verdict {
        Verdict::Pass => Exit::PASS,
        Verdict::Fail => Exit::ANOMALIES,
        Verdict::Inconclusive => Exit::INCONCLUSIVE,
        Verdict::Aborted => Exit::ABORTED,
    };
    Exit {
        code,
        message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_has_its_own_status_and_only_pass_is_zero() {
        let codes: Vec<u8> = [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Inconclusive,
            Verdict::Aborted,
        ]
        .into_iter()
        .map(|v| exit_for_verdict(v).code)
        .collect();
        assert_eq!(codes, [0, 1, 3, 5]);
        assert!(!codes.contains(&Exit::BAD_INPUT) && !codes.contains(&Exit::CANNOT_RUN));
    }
}
