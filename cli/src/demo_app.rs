//! `mapchaos demo-app`: a small shopping-cart service that keeps its carts in
//! the map next to it (the mapchaos sidecar, or any Redis-protocol server),
//! so a storm has an application to hurt. It reports what the map did to it:
//! request latency and errors, and "surprises" — a cart it wrote that was
//! gone or held a value it never wrote.
//!
//! Each worker owns the carts `i` with `i % workers == worker`, so the app
//! knows exactly what each of its carts should hold: anything else was done
//! by someone else (a storm on `keys.source: existing`) or lost by the map.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use hdrhistogram::Histogram;
use mapchaos_api::GoDuration;
use mapchaos_sidecar::config::LogFormat;
use parking_lot::Mutex;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct DemoAppArgs {
    /// The map, as a Redis URL.
    #[arg(
        long,
        env = "MAPCHAOS_DEMO_MAP",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub map: String,
    /// How many carts (keys `{prefix}0` … `{prefix}{carts-1}`) the app keeps.
    #[arg(long, env = "MAPCHAOS_DEMO_CARTS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub carts: u32,
    /// The carts' key prefix; a storm on the app's data uses `keys.pattern:
    /// "{prefix}*"`.
    #[arg(long, env = "MAPCHAOS_DEMO_PREFIX", default_value = "cart:")]
    pub prefix: String,
    /// Concurrent workers, each with its own connection.
    #[arg(long, env = "MAPCHAOS_DEMO_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Requests per second over all workers; 0 runs as fast as possible.
    #[arg(long, env = "MAPCHAOS_DEMO_RATE", default_value_t = 200)]
    pub rate: u32,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "MAPCHAOS_DEMO_METRICS_ADDR",
        default_value = "0.0.0.0:9465"
    )]
    pub metrics_addr: SocketAddr,
    /// How often to log a summary (requests, errors, surprises, latency).
    #[arg(long, default_value = "10s")]
    pub report_every: GoDuration,
    /// Stop after this long; 0s runs until SIGTERM.
    #[arg(long, default_value = "0s")]
    pub duration: GoDuration,
    /// How long a request may take before it counts as an error.
    #[arg(long, default_value = "2s")]
    pub timeout: GoDuration,
    #[arg(long, env = "MAPCHAOS_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    #[arg(long, env = "MAPCHAOS_LOG", default_value = "info")]
    pub log: String,
}

/// The app's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Add an item: SET the cart to its next version.
    AddItem,
    /// View the cart: GET, expecting what the app last wrote.
    View,
    /// Check out: DEL, expecting the cart to be there.
    Checkout,
}

impl Op {
    const ALL: [Op; 3] = [Op::AddItem, Op::View, Op::Checkout];

    fn as_str(self) -> &'static str {
        match self {
            Op::AddItem => "add_item",
            Op::View => "view",
            Op::Checkout => "checkout",
        }
    }

    /// 45% add, 45% view, 10% checkout.
    fn pick(draw: u64) -> Op {
        match draw % 20 {
            0..=8 => Op::AddItem,
            9..=17 => Op::View,
            _ => Op::Checkout,
        }
    }
}

/// A surprise: what the map did that the app did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surprise {
    /// A cart the app wrote was gone.
    LostCart,
    /// A cart came back with older contents the app had since replaced or
    /// checked out (a delete undone, a write lost).
    StaleCart,
    /// A cart held a value the app never wrote there (or was there when
    /// the app had checked it out).
    ForeignValue,
}

impl Surprise {
    fn as_str(self) -> &'static str {
        match self {
            Surprise::LostCart => "lost_cart",
            Surprise::StaleCart => "stale_cart",
            Surprise::ForeignValue => "foreign_value",
        }
    }
}

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    surprises: IntCounterVec,
    /// Latency since the last summary, per op, in microseconds.
    window: Mutex<Vec<Histogram<u64>>>,
}

impl Metrics {
    fn new() -> anyhow::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "mapchaos_demo_requests_total",
                "Requests the demo app made to its map, by op and result (ok or error).",
            ),
            &["op", "result"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mapchaos_demo_request_duration_seconds",
                "Latency of the demo app's requests to its map, by op.",
            )
            .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16)?),
            &["op"],
        )?;
        let surprises = IntCounterVec::new(
            Opts::new(
                "mapchaos_demo_surprises_total",
                "Carts the demo app found gone (lost_cart), back with older contents \
                 (stale_cart) or holding a value it never wrote (foreign_value).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(surprises.clone()))?;
        // Every series from the start, so increase() sees the first one.
        for op in Op::ALL {
            for result in ["ok", "error"] {
                requests.with_label_values(&[op.as_str(), result]);
            }
            latency.with_label_values(&[op.as_str()]);
        }
        for kind in [
            Surprise::LostCart,
            Surprise::StaleCart,
            Surprise::ForeignValue,
        ] {
            surprises.with_label_values(&[kind.as_str()]);
        }
        let window = (0..Op::ALL.len())
            .map(|_| Histogram::new(3).expect("3 significant figures is valid"))
            .collect();
        Ok(Metrics {
            registry,
            requests,
            latency,
            surprises,
            window: Mutex::new(window),
        })
    }

    fn record(&self, op: Op, elapsed: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.requests
            .with_label_values(&[op.as_str(), result])
            .inc();
        self.latency
            .with_label_values(&[op.as_str()])
            .observe(elapsed.as_secs_f64());
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.window.lock()[op as usize].saturating_record(micros.max(1));
    }

    fn surprise(&self, kind: Surprise) {
        self.surprises.with_label_values(&[kind.as_str()]).inc();
    }
}

/// What one worker knows of one of its carts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cart {
    Empty,
    /// Holds the value of this version.
    At(u64),
}

fn value(prefix: &str, cart: u32, version: u64) -> String {
    format!("{prefix}{cart}:v{version}:items={}", version % 7 + 1)
}

struct Worker {
    index: u32,
    args: Arc<DemoAppArgs>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) {
        let args = &self.args;
        let mine: Vec<u32> = (0..args.carts)
            .filter(|c| c % args.workers == self.index)
            .collect();
        if mine.is_empty() {
            return;
        }
        let mut carts = vec![Cart::Empty; mine.len()];
        let mut next_version = 1u64;
        let mut draw = u64::from(self.index).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(f64::from(args.workers) / f64::from(args.rate)));
        let mut due = Instant::now();
        let mut connection: Option<redis::Connection> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(interval) = interval {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                due += interval;
            }
            // xorshift: cheap, and the same sequence every run.
            draw ^= draw << 13;
            draw ^= draw >> 7;
            draw ^= draw << 17;
            let slot = (draw >> 32) as usize % mine.len();
            let op = Op::pick(draw);
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => match self.connect() {
                    Ok(conn) => {
                        self.ready.store(true, Ordering::Relaxed);
                        connection.insert(conn)
                    }
                    Err(error) => {
                        tracing::warn!(%error, map = %args.map, "cannot reach the map");
                        self.metrics.record(op, Duration::ZERO, false);
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                },
            };
            let key = format!("{}{}", args.prefix, mine[slot]);
            let started = Instant::now();
            let outcome = request(conn, op, &key, &args.prefix, mine[slot], next_version);
            let elapsed = started.elapsed();
            match outcome {
                Ok(reply) => {
                    self.metrics.record(op, elapsed, true);
                    let (expected, now) = judge(
                        op,
                        carts[slot],
                        reply,
                        next_version,
                        &args.prefix,
                        mine[slot],
                    );
                    if let Some(surprise) = expected {
                        tracing::debug!(cart = %key, op = op.as_str(), kind = surprise.as_str(), "surprise");
                        self.metrics.surprise(surprise);
                    }
                    carts[slot] = now;
                    if op == Op::AddItem {
                        next_version += 1;
                    }
                }
                Err(error) => {
                    self.metrics.record(op, elapsed, false);
                    tracing::debug!(%error, cart = %key, op = op.as_str(), "request failed");
                    // The reply may still come: never read it as the next one's.
                    connection = None;
                }
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.args.map.as_str())?;
        let timeout = self.args.timeout.as_duration();
        let conn = client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }
}

/// What the map answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Written,
    Value(Option<String>),
    Deleted(bool),
}

fn request(
    conn: &mut redis::Connection,
    op: Op,
    key: &str,
    prefix: &str,
    cart: u32,
    version: u64,
) -> redis::RedisResult<Reply> {
    match op {
        Op::AddItem => redis::cmd("SET")
            .arg(key)
            .arg(value(prefix, cart, version))
            .query::<()>(conn)
            .map(|()| Reply::Written),
        Op::View => redis::cmd("GET")
            .arg(key)
            .query::<Option<String>>(conn)
            .map(Reply::Value),
        Op::Checkout => redis::cmd("DEL")
            .arg(key)
            .query::<u64>(conn)
            .map(|n| Reply::Deleted(n > 0)),
    }
}

/// Compare a reply with what the app expects of the cart: the surprise, if
/// any, and what the cart holds now.
fn judge(
    op: Op,
    cart: Cart,
    reply: Reply,
    version: u64,
    prefix: &str,
    index: u32,
) -> (Option<Surprise>, Cart) {
    match (reply, cart) {
        (Reply::Written, _) => (None, Cart::At(version)),
        (Reply::Deleted(true), Cart::At(_)) | (Reply::Deleted(false), Cart::Empty) => {
            (None, Cart::Empty)
        }
        (Reply::Deleted(false), Cart::At(_)) => (Some(Surprise::LostCart), Cart::Empty),
        (Reply::Deleted(true), Cart::Empty) => (Some(Surprise::ForeignValue), Cart::Empty),
        (Reply::Value(None), Cart::Empty) => (None, Cart::Empty),
        (Reply::Value(None), Cart::At(_)) => (Some(Surprise::LostCart), Cart::Empty),
        (Reply::Value(Some(seen)), Cart::At(v)) if seen == value(prefix, index, v) => (None, cart),
        (Reply::Value(Some(seen)), _) if own_version(&seen, prefix, index).is_some() => {
            let old = own_version(&seen, prefix, index).expect("checked");
            (Some(Surprise::StaleCart), Cart::At(old))
        }
        (Reply::Value(Some(_)), _) => {
            debug_assert_eq!(op, Op::View);
            // Someone else's value: the app no longer knows what the cart
            // holds, and treats the cart as emptied until it writes again.
            (Some(Surprise::ForeignValue), Cart::Empty)
        }
    }
}

/// The version of a value this app wrote to cart `index`, if it is one.
fn own_version(seen: &str, prefix: &str, index: u32) -> Option<u64> {
    let version: u64 = seen
        .strip_prefix(&format!("{prefix}{index}:v"))?
        .split(':')
        .next()?
        .parse()
        .ok()?;
    (seen == value(prefix, index, version)).then_some(version)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Result<String, StatusCode> {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&metrics.registry.gather(), &mut buffer)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    String::from_utf8(buffer).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// Log what happened since the last summary.
fn summarise(metrics: &Metrics, totals: &mut [u64; 5]) {
    let count = |op: Op, result: &str| {
        metrics
            .requests
            .with_label_values(&[op.as_str(), result])
            .get()
    };
    let ok: u64 = Op::ALL.iter().map(|op| count(*op, "ok")).sum();
    let errors: u64 = Op::ALL.iter().map(|op| count(*op, "error")).sum();
    let surprises = |kind: Surprise| metrics.surprises.with_label_values(&[kind.as_str()]).get();
    let now = [
        ok,
        errors,
        surprises(Surprise::LostCart),
        surprises(Surprise::StaleCart),
        surprises(Surprise::ForeignValue),
    ];
    let delta: Vec<u64> = now.iter().zip(totals.iter()).map(|(n, t)| n - t).collect();
    *totals = now;
    let mut window = metrics.window.lock();
    let p99 = |op: Op| Duration::from_micros(window[op as usize].value_at_quantile(0.99));
    tracing::info!(
        requests = delta[0] + delta[1],
        errors = delta[1],
        lost_carts = delta[2],
        stale_carts = delta[3],
        foreign_values = delta[4],
        p99_add_item = ?p99(Op::AddItem),
        p99_view = ?p99(Op::View),
        p99_checkout = ?p99(Op::Checkout),
        "demo app"
    );
    for histogram in window.iter_mut() {
        histogram.reset();
    }
}

pub async fn run(args: DemoAppArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    redis::Client::open(args.map.as_str())
        .with_context(|| format!("--map {:?} is not a Redis URL", args.map))?;
    let args = Arc::new(args);
    let metrics = Arc::new(Metrics::new()?);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--metrics-addr)", args.metrics_addr))?;
    let ready_flag = ready.clone();
    let router = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready_flag.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the map has not answered yet",
                        )
                    }
                }
            }),
        )
        .with_state(metrics.clone());
    let bound = listener.local_addr().unwrap_or(args.metrics_addr);
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(server_shutdown.cancelled_owned())
            .await
    });
    tracing::info!(map = %args.map, carts = args.carts, workers = args.workers, rate = args.rate, metrics = %bound, "demo app started");

    let workers: Vec<_> = (0..args.workers)
        .map(|index| {
            let worker = Worker {
                index,
                args: args.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
                ready: ready.clone(),
            };
            std::thread::Builder::new()
                .name(format!("demo-{index}"))
                .spawn(move || worker.run())
        })
        .collect::<Result<_, _>>()
        .context("cannot start the workers")?;

    let deadline = (!args.duration.as_duration().is_zero())
        .then(|| tokio::time::Instant::now() + args.duration.as_duration());
    let mut totals = [0u64; 5];
    let mut ticks =
        tokio::time::interval(args.report_every.as_duration().max(Duration::from_secs(1)));
    ticks.tick().await;
    loop {
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = until_deadline => break,
            _ = ticks.tick() => summarise(&metrics, &mut totals),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    summarise(&metrics, &mut totals);
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_knows_its_own_writes_and_names_everything_else() {
        let at = |v| Cart::At(v);
        let mine = |v| Reply::Value(Some(value("cart:", 3, v)));
        let judge = |op, cart, reply| judge(op, cart, reply, 9, "cart:", 3);
        assert_eq!(
            judge(Op::AddItem, Cart::Empty, Reply::Written),
            (None, at(9))
        );
        assert_eq!(judge(Op::View, at(4), mine(4)), (None, at(4)));
        assert_eq!(
            judge(Op::View, Cart::Empty, Reply::Value(None)),
            (None, Cart::Empty)
        );
        assert_eq!(
            judge(Op::View, at(4), Reply::Value(None)),
            (Some(Surprise::LostCart), Cart::Empty)
        );
        assert_eq!(
            judge(Op::View, at(4), mine(3)),
            (Some(Surprise::StaleCart), at(3)),
            "an older version of its own is not what it wrote last"
        );
        assert_eq!(
            judge(Op::View, Cart::Empty, mine(3)),
            (Some(Surprise::StaleCart), at(3)),
            "a checked-out cart came back"
        );
        assert_eq!(
            judge(Op::View, at(4), Reply::Value(Some(value("cart:", 5, 4)))),
            (Some(Surprise::ForeignValue), Cart::Empty),
            "another cart's value"
        );
        assert_eq!(
            judge(Op::View, Cart::Empty, Reply::Value(Some("storm".into()))),
            (Some(Surprise::ForeignValue), Cart::Empty)
        );
        assert_eq!(
            judge(Op::Checkout, at(4), Reply::Deleted(true)),
            (None, Cart::Empty)
        );
        assert_eq!(
            judge(Op::Checkout, at(4), Reply::Deleted(false)),
            (Some(Surprise::LostCart), Cart::Empty)
        );
        assert_eq!(
            judge(Op::Checkout, Cart::Empty, Reply::Deleted(true)),
            (Some(Surprise::ForeignValue), Cart::Empty)
        );
    }

    #[test]
    fn the_mix_is_mostly_adds_and_views() {
        let mut counts = [0u32; 3];
        for draw in 0..2000u64 {
            counts[Op::pick(draw) as usize] += 1;
        }
        assert_eq!(counts, [900, 900, 200]);
    }
}
