//! Where the application's RESP connections meet the running storm: every
//! connection registers here, a storm attaches its [`AppTraffic`] to all of
//! them, and each connection feeds its own [`AppLog`] while it runs commands.
//!
//! A connection runs each batch of commands inside its own section (a mutex
//! no other connection touches, so it is never contended while no storm
//! attaches or detaches). Attaching waits for each connection's running
//! batch; detaching holds every section at once, so the logs it takes form a
//! consistent cut: each command left unrecorded takes effect after every
//! recorded one returned, and no recorded read can have seen an unrecorded
//! write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapchaos_storm::app_traffic::{AppLog, AppOp, AppPending, AppTap, AppTraffic};
use mapchaos_storm::client::Response;
use mapchaos_storm::restore::AppWrite;
use parking_lot::{Mutex, MutexGuard};

use crate::engine::Pattern;

/// How a command touches the keys it names, as far as a storm's history goes.
pub(crate) enum KeyAccess<'a> {
    /// One of the operations the history models.
    Modelled(AppOp<'a>),
    /// Writes every `step`-th of these keys in a way the history cannot
    /// model (SET with options, MSET, DEL of several keys, INCR, EXPIRE…).
    Unmodelled { keys: &'a [Bytes], step: usize },
    /// Writes every key (FLUSHDB, FLUSHALL).
    Everything,
    /// Only reads, or names no key: leaving it out of the history is sound.
    Untouched,
}

/// The application's connections, and the storm attached to them.
#[derive(Default)]
pub struct AppProbe {
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    next_id: u64,
    storm: Option<Attached>,
    connections: HashMap<u64, Arc<Mutex<Section>>>,
}

#[derive(Clone)]
struct Attached {
    traffic: Arc<AppTraffic>,
    keys: Arc<Pattern>,
}

/// What one connection holds while it runs a batch of commands.
#[derive(Default)]
pub(crate) struct Section {
    storm: Option<StormTap>,
}

impl Section {
    /// The running storm's tap, if one is attached.
    pub(crate) fn storm(&mut self) -> Option<&mut StormTap> {
        self.storm.as_mut()
    }
}

/// One connection's share of the attached storm.
pub(crate) struct StormTap {
    log: AppLog,
    keys: Arc<Pattern>,
}

impl StormTap {
    fn new(attached: &Attached) -> Self {
        StormTap {
            log: AppLog::new(attached.traffic.clone()),
            keys: attached.keys.clone(),
        }
    }

    /// A command is about to run, called at `call`. `Some` when it goes into
    /// the history; pass it to [`StormTap::after`].
    pub(crate) fn before(&mut self, access: KeyAccess<'_>, call: Instant) -> Option<AppPending> {
        self.note_write(&access);
        if self.log.traffic().is_closed() {
            // The workers stopped: only the writes matter now (the restore).
            return None;
        }
        if !self.log.traffic().records() {
            // Not recorded, the application's writes leave the keys they
            // touch with incomplete histories: leave those keys out of the
            // check rather than blame the map for the application.
            match access {
                KeyAccess::Everything => self.log.exclude_everything(),
                KeyAccess::Unmodelled { keys, step } => {
                    for key in keys.iter().step_by(step.max(1)) {
                        self.exclude(key);
                    }
                }
                KeyAccess::Modelled(op) if op.writes() => self.exclude(op.key()),
                KeyAccess::Modelled(_) | KeyAccess::Untouched => {}
            }
            return None;
        }
        match access {
            KeyAccess::Untouched => None,
            KeyAccess::Everything => {
                self.log.exclude_everything();
                None
            }
            KeyAccess::Unmodelled { keys, step } => {
                for key in keys.iter().step_by(step.max(1)) {
                    self.exclude(key);
                }
                None
            }
            KeyAccess::Modelled(op) => {
                if !self.log.traffic().is_running() && op.writes() {
                    self.exclude(op.key());
                    return None;
                }
                self.log.begin(op, call)
            }
        }
    }

    /// The command ran from `call` for `latency`; `reply` is what a modelled
    /// one returned (`None` on an error).
    pub(crate) fn after(
        &mut self,
        pending: Option<AppPending>,
        reply: Option<&Response>,
        call: Instant,
        latency: Duration,
    ) {
        self.log.latency(latency);
        if let Some(pending) = pending {
            self.log.end(pending, reply, call, call + latency);
        }
    }

    /// Tell a restoring storm what the application is about to write, so
    /// the restore never reverts it.
    fn note_write(&self, access: &KeyAccess<'_>) {
        let traffic = self.log.traffic();
        if !traffic.tracks_writes() {
            return;
        }
        match access {
            KeyAccess::Modelled(AppOp::Set(key, value)) if self.keys.matches(key) => {
                traffic.note_write(key, AppWrite::Set(Bytes::copy_from_slice(value)));
            }
            KeyAccess::Modelled(AppOp::Del(key)) if self.keys.matches(key) => {
                traffic.note_write(key, AppWrite::Deleted);
            }
            KeyAccess::Modelled(_) | KeyAccess::Untouched => {}
            KeyAccess::Unmodelled { keys, step } => {
                for key in keys.iter().step_by((*step).max(1)) {
                    if self.keys.matches(key) {
                        traffic.note_write(key, AppWrite::Unknown);
                    }
                }
            }
            KeyAccess::Everything => traffic.note_flush(),
        }
    }

    fn exclude(&mut self, key: &[u8]) {
        // Before the keyspace is known only the storm's glob can tell; after,
        // the log looks the key up itself.
        if self.log.traffic().is_running() || self.keys.matches(key) {
            self.log.exclude_key(key);
        }
    }
}

/// A connection's registration; unregisters (handing in its log) when dropped.
pub(crate) struct ProbeHandle {
    probe: Arc<AppProbe>,
    id: u64,
    section: Arc<Mutex<Section>>,
}

impl ProbeHandle {
    /// Enter the connection's section for one batch of commands. Never hold
    /// it across an await: attaching and detaching wait for it.
    pub(crate) fn enter(&self) -> MutexGuard<'_, Section> {
        self.section.lock()
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        let mut state = self.probe.state.lock();
        state.connections.remove(&self.id);
        // Under the probe's lock, so a detach cannot finish between taking
        // this log out and handing it in.
        let storm = self.section.lock().storm.take();
        drop(storm);
    }
}

impl AppProbe {
    pub fn new() -> Arc<Self> {
        Arc::new(AppProbe::default())
    }

    /// Register a new connection.
    pub(crate) fn connect(self: &Arc<Self>) -> ProbeHandle {
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        let section = Arc::new(Mutex::new(Section {
            storm: state.storm.as_ref().map(StormTap::new),
        }));
        state.connections.insert(id, section.clone());
        ProbeHandle {
            probe: self.clone(),
            id,
            section,
        }
    }
}

impl AppTap for AppProbe {
    fn attach(&self, traffic: Arc<AppTraffic>) {
        let attached = Attached {
            keys: Arc::new(Pattern::new(traffic.key_pattern())),
            traffic,
        };
        let mut state = self.state.lock();
        // One at a time is enough here: whatever a connection does before it
        // gets its log happens before the storm prepares its keys.
        for section in state.connections.values() {
            section.lock().storm = Some(StormTap::new(&attached));
        }
        state.storm = Some(attached);
    }

    fn detach(&self) {
        let mut state = self.state.lock();
        state.storm = None;
        let mut sections: Vec<MutexGuard<'_, Section>> =
            state.connections.values().map(|s| s.lock()).collect();
        for section in &mut sections {
            section.storm = None;
        }
    }

    /// Holds the probe (no connection registers or leaves) and every
    /// connection's section, as `detach` does.
    fn quiesce(&self, f: &mut dyn FnMut()) {
        let state = self.state.lock();
        let sections: Vec<MutexGuard<'_, Section>> =
            state.connections.values().map(|s| s.lock()).collect();
        f();
        drop(sections);
    }
}
