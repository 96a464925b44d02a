//! The delete audit trail: every key the map removes, counted by who removed
//! it and why (`mapchaos_deletes_total{source,cause}`), one JSON line each on
//! a bounded log when enabled ([`log`]), and for each storm on existing keys
//! a journal of the keys it deleted and what became of them ([`journal`]).
//!
//! The engine reports each removal to [`DeleteAudit`] (its `DeleteSink`)
//! under the shard lock, so no command can remove a key unseen — whatever
//! command it is, including ones added later. Who asked is not the engine's to
//! know: the RESP dispatcher and the storm's engine client mark their thread
//! with an actor for the length of one command ([`as_app`], [`as_storm`]).
//! Every engine call runs synchronously on its caller's thread, so the mark
//! names exactly the command that caused the removal.

pub mod journal;
pub mod log;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use crate::engine::{DeleteSink, Removal};
use crate::server::ServerStats;
use log::{DeleteLog, Event, EventKey};

/// Who removed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An application command on the RESP port.
    App,
    /// A storm running in this sidecar (its workers, or its restore).
    Storm,
    /// The map itself: expiry.
    Map,
    /// A removal no actor claimed (an embedding that calls the engine
    /// directly); counted so a missed hook shows instead of hiding.
    Other,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::App, Source::Storm, Source::Map, Source::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::App => "app",
            Source::Storm => "storm",
            Source::Map => "map",
            Source::Other => "other",
        }
    }
}

/// Why a key was removed: the command family, or the kind of expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Del,
    Unlink,
    Getdel,
    /// The source key of `RENAME`/`RENAMENX`/`MOVE`.
    Rename,
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `GETEX` with a deadline
    /// already past.
    Expire,
    /// `SET` (and its relatives) with a deadline already past. An overwrite
    /// is not a delete and is not counted.
    Set,
    Flushdb,
    Flushall,
    /// A storm's restore putting back an application's delete.
    Restore,
    ExpiredLazy,
    ExpiredActive,
    /// Any other command that removed a key.
    Other,
}

impl Cause {
    pub const ALL: [Cause; 12] = [
        Cause::Del,
        Cause::Unlink,
        Cause::Getdel,
        Cause::Rename,
        Cause::Expire,
        Cause::Set,
        Cause::Flushdb,
        Cause::Flushall,
        Cause::Restore,
        Cause::ExpiredLazy,
        Cause::ExpiredActive,
        Cause::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Del => "del",
            Cause::Unlink => "unlink",
            Cause::Getdel => "getdel",
            Cause::Rename => "rename",
            Cause::Expire => "expire",
            Cause::Set => "set",
            Cause::Flushdb => "flushdb",
            Cause::Flushall => "flushall",
            Cause::Restore => "restore",
            Cause::ExpiredLazy => "expired_lazy",
            Cause::ExpiredActive => "expired_active",
            Cause::Other => "other",
        }
    }

    /// The cause a command (lowercase, as in the command table) stands for.
    pub fn of_command(command: &str) -> Cause {
        match command {
            "del" => Cause::Del,
            "unlink" => Cause::Unlink,
            "getdel" => Cause::Getdel,
            "rename" | "renamenx" | "move" => Cause::Rename,
            "expire" | "pexpire" | "expireat" | "pexpireat" | "getex" => Cause::Expire,
            "set" | "setex" | "psetex" | "getset" => Cause::Set,
            "flushdb" => Cause::Flushdb,
            "flushall" => Cause::Flushall,
            "restore" => Cause::Restore,
            _ => Cause::Other,
        }
    }

    fn index(self) -> usize {
        Cause::ALL.iter().position(|&c| c == self).expect("listed")
    }
}

/// The `{source,cause}` series exported at 0 from the start (a counter first
/// seen at N is invisible to `increase()`): every pair that can happen.
const EXPORTED: &[(Source, &[Cause])] = &[
    (
        Source::App,
        &[
            Cause::Del,
            Cause::Unlink,
            Cause::Getdel,
            Cause::Rename,
            Cause::Expire,
            Cause::Set,
            Cause::Flushdb,
            Cause::Flushall,
            Cause::Other,
        ],
    ),
    (Source::Storm, &[Cause::Del, Cause::Restore]),
    (Source::Map, &[Cause::ExpiredLazy, Cause::ExpiredActive]),
];

/// Who is running engine calls on this thread.
#[derive(Debug, Clone, Copy)]
struct Actor {
    source: Source,
    client: u64,
    command: &'static str,
}

/// Where an actor's client name is found, kept per thread and replaced only
/// when it changes, so marking a command clones no shared `Arc`.
#[derive(Default)]
struct Names {
    server: Option<Arc<ServerStats>>,
    storm: Option<Arc<str>>,
}

thread_local! {
    static ACTOR: Cell<Option<Actor>> = const { Cell::new(None) };
    static NAMES: RefCell<Names> = RefCell::new(Names::default());
}

/// The mark of one command on its thread; dropping it restores the one
/// before (commands do not nest today, but a guard cannot leak a mark).
#[must_use = "the mark lasts as long as the guard"]
pub struct Acting {
    previous: Option<Actor>,
}

impl Drop for Acting {
    fn drop(&mut self) {
        ACTOR.set(self.previous);
    }
}

fn enter(actor: Actor) -> Acting {
    Acting {
        previous: ACTOR.replace(Some(actor)),
    }
}

/// Mark this thread as running application command `command` (lowercase)
/// for RESP client `client` of `server`.
pub(crate) fn as_app(server: &Arc<ServerStats>, client: u64, command: &'static str) -> Acting {
    NAMES.with_borrow_mut(|names| {
        if !names
            .server
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, server))
        {
            names.server = Some(server.clone());
        }
    });
    enter(Actor {
        source: Source::App,
        client,
        command,
    })
}

/// Mark this thread as running storm operation `command` (`del`,
/// `restore`) for the storm client `client` named `name`.
pub fn as_storm(name: &Arc<str>, client: u64, command: &'static str) -> Acting {
    NAMES.with_borrow_mut(|names| {
        if !names.storm.as_ref().is_some_and(|s| Arc::ptr_eq(s, name)) {
            names.storm = Some(name.clone());
        }
    });
    enter(Actor {
        source: Source::Storm,
        client,
        command,
    })
}

fn client_name(actor: &Actor) -> Option<String> {
    NAMES.with_borrow(|names| match actor.source {
        Source::App => names
            .server
            .as_ref()?
            .client(actor.client)?
            .name
            .map(|name| String::from_utf8_lossy(&name).into_owned()),
        Source::Storm => names.storm.as_deref().map(str::to_owned),
        Source::Map | Source::Other => None,
    })
}

/// Counter stripes: each thread adds to its own, so deletes on many threads
/// never contend on one cache line; a scrape sums them.
const STRIPES: usize = 16;
const CELLS: usize = Source::ALL.len() * Cause::ALL.len();

#[repr(align(64))]
struct Stripe([AtomicU64; CELLS]);

struct Counts {
    stripes: Box<[Stripe]>,
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

fn cell(source: Source, cause: Cause) -> usize {
    let source = Source::ALL
        .iter()
        .position(|&s| s == source)
        .expect("listed");
    source * Cause::ALL.len() + cause.index()
}

impl Counts {
    fn new() -> Self {
        Counts {
            stripes: (0..STRIPES)
                .map(|_| Stripe(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    fn add(&self, source: Source, cause: Cause, n: u64) {
        let stripe = STRIPE.with(|s| *s);
        self.stripes[stripe].0[cell(source, cause)].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, source: Source, cause: Cause) -> u64 {
        let cell = cell(source, cause);
        self.stripes
            .iter()
            .map(|s| s.0[cell].load(Ordering::Relaxed))
            .sum()
    }
}

const METRIC: &str = "mapchaos_deletes_total";
const HELP: &str = "Keys the map removed, by who removed them (app, storm, map, other) and why.";

/// `mapchaos_deletes_total{source,cause}`, summed from the stripes at scrape.
struct DeleteMetric {
    counts: Arc<Counts>,
    desc: Desc,
}

impl Collector for DeleteMetric {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let vec = IntCounterVec::new(Opts::new(METRIC, HELP), &["source", "cause"])
            .expect("valid metric");
        for source in Source::ALL {
            let exported = EXPORTED
                .iter()
                .find(|(s, _)| *s == source)
                .map_or(&[][..], |(_, causes)| causes);
            for cause in Cause::ALL {
                let n = self.counts.get(source, cause);
                if n > 0 || exported.contains(&cause) {
                    vec.with_label_values(&[source.as_str(), cause.as_str()])
                        .inc_by(n);
                }
            }
        }
        vec.collect()
    }
}

/// The map's delete audit: the engine's `DeleteSink`.
pub struct DeleteAudit {
    counts: Arc<Counts>,
    log: Option<DeleteLog>,
}

impl DeleteAudit {
    /// Count into `registry` (every expected series at 0 from now); with
    /// `log`, also write one line per delete.
    pub fn new(registry: &prometheus::Registry, log: Option<DeleteLog>) -> Arc<Self> {
        let counts = Arc::new(Counts::new());
        let desc = Desc::new(
            METRIC.into(),
            HELP.into(),
            vec!["source".into(), "cause".into()],
            HashMap::new(),
        )
        .expect("valid metric");
        let metric = DeleteMetric {
            counts: counts.clone(),
            desc,
        };
        if let Err(error) = registry.register(Box::new(metric)) {
            tracing::warn!(%error, "{METRIC} is already registered; not exporting this audit's");
        }
        Arc::new(DeleteAudit { counts, log })
    }

    /// Keys removed so far by `source` for `cause`.
    pub fn count(&self, source: Source, cause: Cause) -> u64 {
        self.counts.get(source, cause)
    }

    fn record(
        &self,
        source: Source,
        cause: Cause,
        actor: Option<Actor>,
        what: What<'_>,
        removed: bool,
    ) {
        if removed {
            let n = match what {
                What::Key(_) => 1,
                What::Cleared(n) => n,
            };
            self.counts.add(source, cause, n);
        }
        if let Some(log) = &self.log {
            log.send(Event {
                at: SystemTime::now(),
                source,
                cause,
                // For an expiry, the command whose access found it.
                client: actor.map(|a| (a.client, client_name(&a))),
                command: actor.map(|a| a.command),
                key: match what {
                    What::Key(key) => log.event_key(key),
                    What::Cleared(n) => EventKey::Cleared(n),
                },
                removed,
            });
        }
    }
}

/// What one removal took.
#[derive(Clone, Copy)]
enum What<'a> {
    Key(&'a [u8]),
    Cleared(u64),
}

impl DeleteSink for DeleteAudit {
    fn deleted(&self, key: &[u8], how: Removal, removed: bool) {
        let actor = ACTOR.get();
        let (source, cause) = match (how, actor) {
            (Removal::ExpiredLazily, _) => (Source::Map, Cause::ExpiredLazy),
            (Removal::ExpiredActively, _) => (Source::Map, Cause::ExpiredActive),
            (Removal::Deleted, Some(actor)) => (actor.source, Cause::of_command(actor.command)),
            (Removal::Deleted, None) => (Source::Other, Cause::Other),
        };
        self.record(source, cause, actor, What::Key(key), removed);
    }

    fn cleared(&self, keys: u64) {
        let actor = ACTOR.get();
        let (source, cause) = match actor {
            Some(actor) => (actor.source, Cause::of_command(actor.command)),
            None => (Source::Other, Cause::Other),
        };
        self.record(source, cause, actor, What::Cleared(keys), keys > 0);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Encoder as _;

    use super::*;

    #[test]
    fn every_command_that_removes_maps_to_a_bounded_cause() {
        assert_eq!(Cause::of_command("del"), Cause::Del);
        assert_eq!(Cause::of_command("unlink"), Cause::Unlink);
        assert_eq!(Cause::of_command("getdel"), Cause::Getdel);
        assert_eq!(Cause::of_command("renamenx"), Cause::Rename);
        assert_eq!(Cause::of_command("pexpireat"), Cause::Expire);
        assert_eq!(Cause::of_command("set"), Cause::Set);
        assert_eq!(Cause::of_command("flushall"), Cause::Flushall);
        assert_eq!(Cause::of_command("anything-else"), Cause::Other);
    }

    #[test]
    fn every_expected_series_is_exported_at_zero_from_the_start() {
        let registry = prometheus::Registry::new();
        let _audit = DeleteAudit::new(&registry, None);
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for (source, causes) in EXPORTED {
            for cause in *causes {
                let line = format!(
                    "mapchaos_deletes_total{{cause=\"{}\",source=\"{}\"}} 0",
                    cause.as_str(),
                    source.as_str()
                );
                assert!(text.contains(&line), "missing {line} in:\n{text}");
            }
        }
        assert!(!text.contains("source=\"other\""), "{text}");
    }

    #[test]
    fn counts_from_many_threads_add_up_across_stripes() {
        let counts = Arc::new(Counts::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let counts = counts.clone();
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counts.add(Source::App, Cause::Del, 1);
                    }
                });
            }
        });
        assert_eq!(counts.get(Source::App, Cause::Del), 8000);
        assert_eq!(counts.get(Source::Storm, Cause::Del), 0);
    }
}
