//! Signals during `mapchaos run`: the first SIGINT, SIGTERM or SIGHUP stops
//! the storm (preparation, workers and check stop at once; the restore runs
//! to its end), a second says how far the restore is, a third exits at once
//! with [`Exit::FORCED`] and says what was left unrestored.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use mapchaos_api::storm::{StopReason, StormPhase};
use mapchaos_storm::runner::StormControl;

use crate::exit::Exit;

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hangup,
    Interrupt,
    Terminate,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// Its number (the exit status is 128 + this, as a shell reports it).
    pub fn number(self) -> u8 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
        }
    }
}

/// The signals a run listens to, and the first one received.
pub struct Signals {
    first: Arc<OnceLock<Signal>>,
}

impl Signals {
    /// Listen from now on; `restores` is whether the storm puts keys back
    /// (so a forced exit can say what it leaves behind).
    pub fn install(control: Arc<StormControl>, restores: bool) -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered here, before the storm starts, so no signal can take the
        // default action (ending the process) once preparation begins.
        let streams = runtime.block_on(async {
            Ok::<_, std::io::Error>(vec![
                (signal(SignalKind::interrupt())?, Signal::Interrupt),
                (signal(SignalKind::terminate())?, Signal::Terminate),
                (signal(SignalKind::hangup())?, Signal::Hangup),
            ])
        })?;
        let first = Arc::new(OnceLock::new());
        let seen = first.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                runtime.block_on(listen(streams, control, seen, restores));
            })?;
        Ok(Signals { first })
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<Signal> {
        self.first.get().copied()
    }
}

async fn listen(
    mut streams: Vec<(tokio::signal::unix::Signal, Signal)>,
    control: Arc<StormControl>,
    first: Arc<OnceLock<Signal>>,
    restores: bool,
) {
    let count = AtomicU8::new(0);
    loop {
        let signal = std::future::poll_fn(|cx| {
            for (stream, signal) in streams.iter_mut() {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*signal);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        let name = signal.name();
        let phase = control.live().phase;
        let restoring = phase == StormPhase::Restoring;
        let (done, total) = control.restore_progress();
        match count.fetch_add(1, Ordering::Relaxed) {
            0 => {
                let _ = first.set(signal);
                control.interrupt(StopReason::Stopped);
                eprintln!(
                    "{name}: stopping{}; then the partial report (a third signal exits at once)",
                    if restores {
                        ", then restoring what the storm took"
                    } else {
                        ""
                    }
                );
            }
            1 if restoring => eprintln!(
                "{name}: still restoring, {done} of {total} keys done; one more signal \
                 exits now and leaves the rest as the storm left them"
            ),
            1 => eprintln!("{name}: already stopping; one more signal exits now"),
            _ => {
                let left = if restoring {
                    format!(
                        ": {} of {total} keys NOT restored, left as the storm left them",
                        total - done.min(total)
                    )
                } else if restores && total == 0 && phase == StormPhase::Running {
                    ": the restore did NOT run, the stormed keys are as the storm left them"
                        .to_owned()
                } else {
                    String::new()
                };
                eprintln!(
                    "{name} a third time: exiting now with status {}{left}",
                    Exit::FORCED
                );
                std::process::exit(i32::from(Exit::FORCED));
            }
        }
    }
}
