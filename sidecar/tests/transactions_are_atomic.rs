//! `EXEC` is one atomic step across the engine's shards, seen from other
//! clients: concurrent observers (plain `MGET`s and transactions of their
//! own) never see a transaction half done, transfers between keys never
//! change the total, and `WATCH`-based check-and-set loses no update. A
//! control proves the observer has the power to see a half-done write: it
//! catches a pipeline of the same writes sent without `MULTI`.
//!
//! The clients are redis-rs's, sending what applications send
//! (`pipe().atomic()` is `MULTI … EXEC`; `redis::transaction` is the
//! `WATCH` retry loop).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::runtime_with_listener;
use mapchaos_sidecar::engine::{MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::server::{ServerConfig, serve};
use redis::Commands;
use tokio_util::sync::CancellationToken;

/// Keys spread over the engine's 64 shards.
const KEYS: usize = 16;
const RUN_FOR: Duration = Duration::from_millis(1500);

struct Sidecar {
    url: String,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Sidecar {
    fn start() -> Sidecar {
        let (runtime, listener, port) = runtime_with_listener(4);
        let engine: Arc<dyn MapEngine> = Arc::new(ShardedEngine::with_defaults());
        let shutdown = CancellationToken::new();
        runtime.spawn(serve(
            listener,
            engine,
            Arc::new(SidecarMetrics::new()),
            ServerConfig::default(),
            shutdown.clone(),
        ));
        Sidecar {
            url: format!("redis://127.0.0.1:{port}/"),
            shutdown,
            _runtime: runtime,
        }
    }

    fn connect(&self) -> redis::Connection {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        client
            .get_connection_with_timeout(Duration::from_secs(10))
            .expect("connects")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn keys(prefix: &str) -> Vec<String> {
    (0..KEYS).map(|i| format!("{prefix}:{i}")).collect()
}

/// Write `value` to every key: one transaction, or a bare pipeline.
fn write_all(con: &mut redis::Connection, keys: &[String], value: &str, atomic: bool) {
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for key in keys {
        pipe.set(key, value).ignore();
    }
    pipe.query::<()>(con).expect("the write succeeds");
}

/// Writers writing their own values to all the keys, and observers reading
/// them all at once; how many observations saw the keys disagree, out of how
/// many. With `stop_at_first`, observation ends at the first disagreement.
fn observe(atomic: bool, stop_at_first: bool, run_for: Duration) -> (u64, u64) {
    let sidecar = Sidecar::start();
    let keys = Arc::new(keys(if atomic { "tx" } else { "bare" }));
    write_all(&mut sidecar.connect(), &keys, "start", true);
    let stop = Arc::new(AtomicBool::new(false));
    let mismatches = Arc::new(AtomicU64::new(0));
    let observations = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for writer in 0..2 {
        let (mut con, keys, stop) = (sidecar.connect(), keys.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                write_all(&mut con, &keys, &format!("w{writer}:{n}"), atomic);
            }
        }));
    }
    for observer in 0..2 {
        let mut con = sidecar.connect();
        let (keys, stop) = (keys.clone(), stop.clone());
        let (mismatches, observations) = (mismatches.clone(), observations.clone());
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // One observer reads with MGET, the other with a transaction
                // of GETs: both must see one writer's values everywhere.
                let values: Vec<String> = if observer == 0 {
                    con.mget(&keys[..]).expect("MGET succeeds")
                } else {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    for key in keys.iter() {
                        pipe.get(key);
                    }
                    pipe.query(&mut con).expect("the read transaction succeeds")
                };
                observations.fetch_add(1, Ordering::Relaxed);
                if values.iter().any(|value| *value != values[0]) {
                    mismatches.fetch_add(1, Ordering::Relaxed);
                    if stop_at_first {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    while started.elapsed() < run_for && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("no client thread panicked");
    }
    (
        mismatches.load(Ordering::Relaxed),
        observations.load(Ordering::Relaxed),
    )
}

#[test]
fn observers_never_see_a_transaction_half_done() {
    let (mismatches, observations) = observe(true, false, RUN_FOR);
    assert!(observations > 50, "only {observations} observations");
    assert_eq!(
        mismatches, 0,
        "{mismatches} of {observations} observations saw a transaction half done"
    );
}

#[test]
fn the_observer_catches_the_same_writes_sent_without_multi() {
    // The control: without MULTI the writes interleave with the reads, and
    // the same observer must notice (it stops at the first sighting).
    let (mismatches, observations) = observe(false, true, Duration::from_secs(30));
    assert!(
        mismatches > 0,
        "no half-done pipeline seen in {observations} observations: the observer proves nothing"
    );
}

#[test]
fn transfers_inside_transactions_keep_the_total() {
    let sidecar = Sidecar::start();
    let accounts = Arc::new(keys("account"));
    let mut setup = sidecar.connect();
    for account in accounts.iter() {
        let () = setup.set(account, 1000).unwrap();
    }
    let total = 1000 * KEYS as i64;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for worker in 0..3u64 {
        let (mut con, accounts, stop) = (sidecar.connect(), accounts.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = &accounts[(n >> 33) as usize % KEYS];
                let to = &accounts[(n >> 17) as usize % KEYS];
                let amount = (n % 50) as i64;
                redis::pipe()
                    .atomic()
                    .decr(from, amount)
                    .ignore()
                    .incr(to, amount)
                    .ignore()
                    .query::<()>(&mut con)
                    .expect("the transfer succeeds");
            }
        }));
    }
    let mut observer = sidecar.connect();
    let mut observations = 0;
    let started = Instant::now();
    while started.elapsed() < RUN_FOR {
        let balances: Vec<i64> = observer.mget(&accounts[..]).unwrap();
        assert_eq!(
            balances.iter().sum::<i64>(),
            total,
            "a transfer was seen half done: {balances:?}"
        );
        observations += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("no worker panicked");
    }
    assert!(observations > 50, "only {observations} observations");
    let balances: Vec<i64> = observer.mget(&accounts[..]).unwrap();
    assert_eq!(balances.iter().sum::<i64>(), total);
}

#[test]
fn watch_check_and_set_loses_no_update() {
    let sidecar = Sidecar::start();
    let () = sidecar.connect().set("counter", 0).unwrap();
    let (workers, increments) = (4, 150);
    let aborted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let mut con = sidecar.connect();
            let aborted = aborted.clone();
            thread::spawn(move || {
                for _ in 0..increments {
                    // redis-rs's WATCH / GET / MULTI / SET / EXEC loop, which
                    // retries when EXEC answers nil.
                    let _: () = redis::transaction(&mut con, &["counter"], |con, pipe| {
                        let value: i64 = con.get("counter")?;
                        let result: Option<()> =
                            pipe.set("counter", value + 1).ignore().query(con)?;
                        if result.is_none() {
                            aborted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(result)
                    })
                    .expect("the check-and-set succeeds");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no worker panicked");
    }
    let value: i64 = sidecar.connect().get("counter").unwrap();
    assert_eq!(value, workers * increments, "an update was lost");
    // The watch did the work: with four writers racing, some EXECs aborted.
    assert!(
        aborted.load(Ordering::Relaxed) > 0,
        "no EXEC was ever aborted, so WATCH was never put to the test"
    );
}
