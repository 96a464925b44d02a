//! `mapchaos run`: a MapChaos storm on this machine, no cluster — against an
//! embedded sidecar engine, or any Redis-protocol server with `--target`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mapchaos_api::budget::{self, StormShape, StormSite};
use mapchaos_api::resource::MAX_SEED;
use mapchaos_api::spec::KeySource;
use mapchaos_api::storm::{StopReason, StormPhase};
use mapchaos_api::validate::{InvalidSpec, Limits};
use mapchaos_api::{ByteSize, GoDuration};
use mapchaos_sidecar::config::EngineKind;
use mapchaos_sidecar::engine::{Clock, LaggingEngine, MapEngine, ShardedEngine};
use mapchaos_sidecar::metrics::SidecarMetrics;
use mapchaos_sidecar::storm_target::{EngineTarget, WithMetrics};
use mapchaos_storm::client::RespTarget;
use mapchaos_storm::cluster::ClusterTarget;
use mapchaos_storm::restore::RestoreOutcome;
use mapchaos_storm::runner::{self, StormControl, StormPlan, StormTarget};
use mapchaos_storm::verdict::Judging;

use crate::exit::{Exit, exit_for_verdict};
use crate::probes::LocalProbes;
use crate::{manifest, preflight};
use mapchaos_api::probe::ProbeStage;

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Text,
    /// The full report as JSON, on stdout.
    Json,
}

/// `mapchaos run FILE`: storm locally and print the report.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 pass, 1 anomalies found, 2 bad input \
(the message names the field or flag and its limit; nothing was run), \
3 inconclusive (nothing proven: no overlapping operations of known outcome, \
keys the search could not finish, or more failed operations than \
abort.maxErrorRate, 5% by default), 4 the storm could not run (or its restore \
could not reach every key), 5 aborted (an abort condition stopped the storm: \
never a pass), 7 a steady-state probe (spec.probes) failed while the map did \
not (the verdict is FAIL, the report's mapVerdict the map's own), 8 a `before` \
probe failed: no storm ran. The report's last line gives the verdict word and \
why.\n\n\
Probes: `mapchaos run` calls spec.probes itself (http and prometheus): \
`before` ones before the storm (each up to failureThreshold times, interval \
apart), `during` ones every interval while the workers storm (stopOnFailure \
stops the storm, which restores), `after` ones once it ended. They are listed \
in the report (JSON: `probes`).\n\n\
Signals: SIGINT, SIGTERM or SIGHUP stops whatever phase runs within a second \
(preparing, storming, checking: the check's unfinished keys count as unknown), \
restores what the storm took (with spec.storm.restore), prints the partial \
report and exits 128 + the signal's number: 130 SIGINT, 143 SIGTERM, 129 \
SIGHUP. A second signal while restoring only says how far the restore is; a \
third exits at once with status 6, naming how many keys were not restored.

Memory: before anything runs, the storm's memory is estimated from the \
manifest (keys.count, keys.prefix, keys.valueSize, workers, pipeline, \
check.maxOps, rate x duration) and held to --memory-budget, else \
spec.storm.memoryBudget, else half of this container's memory limit or of the \
machine's available memory; a storm over it is refused with exit 2, naming \
each field and the largest value of it that fits.

Restore over the network: with --target, keys.source: existing and \
restore: true, the storm watches the application's writes with MONITOR so \
that every key the application wrote keeps its last write; a server that \
refuses MONITOR stops the run before anything is touched (exit 4) unless \
--restore-unwatched (keys put back are then reported restored_unwatched).

Redis Cluster: a --target URL naming any node of a Redis Cluster (seen in \
INFO cluster) is a seed: the slot map is read from it (CLUSTER SHARDS, else \
CLUSTER SLOTS), every primary is connected with the seed URL's scheme and \
credentials (a primary that does not answer: exit 4, naming it and its \
slots), each key goes to its slot's primary (pipelined per node), MOVED \
replies are followed and the map read again, ASK replies are followed with \
ASKING once. A storm SCAN is one SCAN per primary; one during which slots \
moved is recorded with no outcome. The restore and the MONITOR write watch \
run on every primary, a compare-and-set per slot. The report (JSON: \
`cluster`) gives per node its slots, keys, ops, errors, MOVED/ASK replies, \
SCAN pages and race exposures.")]
pub struct RunArgs {
    /// A YAML file with a MapChaos (other kinds in it are skipped).
    pub file: PathBuf,

    /// Which MapChaos to run when the file has several.
    #[arg(long)]
    pub name: Option<String>,

    /// Storm a Redis-protocol server (`redis://host:port`) instead of an
    /// embedded engine. Synthetic storms write only keys under
    /// `spec.storm.keys.prefix`. A Redis Cluster node as the URL (a seed) is
    /// detected: the storm then routes each key to its slot's primary,
    /// follows MOVED and ASK, scans every primary, and reports per node.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,

    /// The embedded engine: `sharded` (correct) or `lagging` (deliberately
    /// broken: reads lag behind deletes, to see the checker catch it).
    #[arg(long, value_enum, default_value_t = EngineKind::Sharded, conflicts_with = "target")]
    pub engine: EngineKind,

    /// With `--engine lagging`: milliseconds between read-snapshot refreshes.
    #[arg(long, default_value_t = 5)]
    pub lag_ms: u64,

    /// Override `spec.duration` (Go syntax: "10s", "1m").
    #[arg(long)]
    pub duration: Option<GoDuration>,

    /// Override `spec.storm.workers`.
    #[arg(long)]
    pub workers: Option<u32>,

    /// Override the seed (`spec.seed`, else random), to replay a storm; at
    /// most 2^53-1, like `spec.seed`, so a seed a report prints can go in a
    /// manifest.
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=MAX_SEED))]
    pub seed: Option<u64>,

    /// The most memory the storm may use ("512Mi", "2GiB"): its key table,
    /// the embedded map's keys, workers and history. Default:
    /// `spec.storm.memoryBudget`, else half of this container's memory
    /// limit, else half of the machine's available memory.
    #[arg(long, value_name = "SIZE")]
    pub memory_budget: Option<ByteSize>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Save the recorded history here (JSON), for `mapchaos check`.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,

    /// Write a self-contained HTML report here: the verdict and why,
    /// per-second charts, the tables, and a timeline per anomalous key (a
    /// lane per worker, a bar per operation). Opens offline in any browser.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Serve Prometheus metrics (/metrics) here while the storm runs.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Threads for the race checker (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub check_threads: usize,

    /// With `--target` and `keys.source: existing`: you promise that no other
    /// client writes the stormed keys while the storm runs, so anomalies
    /// count as evidence. Without it, anomalies there leave the verdict
    /// INCONCLUSIVE (exit 3): the storm cannot see other clients' writes, and
    /// an application writing its keys looks exactly like a map losing a
    /// delete. (A storm in the sidecar sees the application's commands and
    /// needs no promise.)
    #[arg(long)]
    pub exclusive: bool,

    /// With `--target`, `keys.source: existing` and `restore: true`: restore
    /// even when the application's writes cannot be watched (`MONITOR`
    /// refused by an ACL, renamed, or not served). Without it such a storm
    /// does not start (exit 4). With it, an application write that the storm
    /// later overwrote or deleted gets the key's original back; every key
    /// put back is reported `restored_unwatched`.
    #[arg(long)]
    pub restore_unwatched: bool,

    /// With `--target`: how long one request may wait for its reply.
    #[arg(long, default_value = "5s")]
    pub request_timeout: GoDuration,

    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: RunArgs) -> Exit {
    let manifest = match manifest::load(&args.file, args.name.as_deref()) {
        Ok(manifest) => manifest,
        Err(error) => return Exit::bad_input(error),
    };
    let mut spec = manifest.spec;
    if let Some(duration) = args.duration {
        spec.duration = duration;
    }
    if let Some(workers) = args.workers {
        spec.storm.workers = workers;
    }
    if let Err(message) = check_flags(&args) {
        return Exit::bad_input(message);
    }
    let mut limits = Limits {
        budget: preflight::memory_budget(args.memory_budget, &spec),
        site: StormSite {
            map_in_process: args.target.is_none(),
            existing_bytes: None,
        },
        selects_pods: false,
    };
    let cannot_run = |invalid: InvalidSpec| {
        let lines: Vec<String> = invalid.0.iter().map(|e| format!("  {e}")).collect();
        Exit::bad_input(format!(
            "{}: MapChaos {:?} cannot run:\n{}",
            args.file.display(),
            manifest.name,
            lines.join("\n")
        ))
    };
    if let Err(invalid) = spec.validate_with(&limits) {
        return cannot_run(invalid);
    }
    // Before the storm: a typo in a path must not cost a whole storm.
    for (flag, path) in [("--history", &args.history), ("--report", &args.report)] {
        if let Some(path) = path
            && let Err(error) = crate::html_report::check_writable(path)
        {
            return Exit::bad_input(format!("{flag} {}: {error}", path.display()));
        }
    }
    if !args.quiet {
        for note in &manifest.notes {
            eprintln!("note: {note}");
        }
        // The one cluster rule a local run does not apply: say so.
        if let Err(invalid) = spec.validate() {
            for error in invalid.0.iter().filter(|e| e.field == "spec.selector") {
                eprintln!("note: a cluster would refuse this manifest: {error}");
            }
        }
        if spec.selector != Default::default() {
            eprintln!("note: spec.selector only matters in a cluster; running the storm locally");
        }
        if let Some(schedule) = &spec.schedule {
            eprintln!(
                "note: spec.schedule ({schedule:?}) only matters in a cluster; running the storm once"
            );
        }
    }
    let seed = args.seed.or(spec.seed).unwrap_or_else(random_seed);
    let mut plan = StormPlan {
        storm: spec.storm.clone(),
        check: spec.check.clone(),
        abort: spec.abort.clone(),
        duration: spec.duration.0,
        seed,
        check_threads: args.check_threads,
        check_memory: None,
    };

    let metrics = Arc::new(SidecarMetrics::new());
    let restores = spec.storm.restore && spec.storm.keys.source == KeySource::Existing;
    let (engine, target): (Option<Arc<dyn MapEngine>>, Box<dyn StormTarget>) = match &args.target {
        Some(url) => match ClusterTarget::detect(url, args.request_timeout.0) {
            Ok(Some(mut cluster)) => {
                if restores
                    && let Err(exit) = watch_app_writes(|| cluster.watch_app_writes(), url, &args)
                {
                    return exit;
                }
                if !args.quiet {
                    crate::cluster_notes::print(&cluster, &spec.storm.keys);
                }
                (
                    None,
                    Box::new(WithMetrics {
                        inner: cluster,
                        metrics: metrics.clone(),
                    }),
                )
            }
            Ok(None) => match RespTarget::new(url, args.request_timeout.0) {
                Ok(mut resp) => {
                    if restores
                        && let Err(exit) = watch_app_writes(|| resp.watch_app_writes(), url, &args)
                    {
                        return exit;
                    }
                    (
                        None,
                        Box::new(WithMetrics {
                            inner: resp,
                            metrics: metrics.clone(),
                        }),
                    )
                }
                Err(error) => {
                    return Exit::cannot_run(format!("cannot reach --target {url}: {error}"));
                }
            },
            Err(error) => {
                return Exit::cannot_run(format!("cannot reach --target {url}: {error}"));
            }
        },
        None => {
            let sharded: Arc<dyn MapEngine> = Arc::new(ShardedEngine::new(64, Clock::System));
            let engine: Arc<dyn MapEngine> = match args.engine {
                EngineKind::Sharded => sharded,
                EngineKind::Lagging => {
                    LaggingEngine::new(sharded, Duration::from_millis(args.lag_ms))
                }
            };
            let target = WithMetrics {
                inner: EngineTarget::new(engine.clone()),
                metrics: metrics.clone(),
            };
            (Some(engine), Box::new(target))
        }
    };
    if spec.storm.keys.source == KeySource::Existing && args.target.is_some() {
        // The storm copies the keys it takes: at most what the server holds.
        limits.site.existing_bytes = target.memory().live_bytes;
        if let Err(invalid) = spec.validate_with(&limits) {
            return cannot_run(invalid);
        }
    }
    let shape = StormShape {
        storm: spec.storm.clone(),
        check: spec.check.clone(),
        duration: spec.duration.0,
    };
    let budget = limits.budget_for(&spec);
    plan.check_memory = Some(budget::check_memory(
        &shape.footprint(limits.site),
        budget.bytes.0,
        args.check_threads.max(1),
    ) as usize);

    let _metrics_server = match args.metrics_addr {
        Some(addr) => match crate::metrics_server::start(addr, engine.clone(), metrics.clone()) {
            Ok(server) => Some(server),
            Err(error) => return Exit::cannot_run(format!("{error:#}")),
        },
        None => None,
    };

    let probes = match LocalProbes::new(&spec.probes) {
        Ok(probes) => probes,
        Err(error) => return Exit::cannot_run(format!("cannot start the probes: {error}")),
    };
    if let Some(probes) = probes.as_ref() {
        let failed = probes.once(ProbeStage::Before);
        if !failed.is_empty() {
            return before_failed(probes, &failed, args.output);
        }
    }
    let control = StormControl::new();
    let signals = match crate::signals::Signals::install(control.clone(), restores) {
        Ok(signals) => signals,
        Err(error) => return Exit::cannot_run(format!("cannot listen for signals: {error}")),
    };
    metrics.storm_active.set(1);
    let progress = Progress::start(
        &control,
        plan.duration,
        args.quiet || args.output == OutputFormat::Json,
    );
    let during = probes.as_ref().map(|p| p.during(control.clone()));
    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(|| runner::run(&plan, target.as_ref(), &control));
        let mut phase = None;
        while !worker.is_finished() {
            progress.tick(&control);
            let now = control.live().phase;
            if phase != Some(now) && !args.quiet && !now.is_final() {
                // One line per phase, so a log (or a test) can tell where it is.
                progress
                    .bar
                    .suspend(|| eprintln!("phase: {}", phase_name(now)));
            }
            phase = Some(now);
            std::thread::sleep(Duration::from_millis(20));
        }
        worker.join().expect("the storm thread panicked")
    });
    progress.finish();
    metrics.storm_active.set(0);
    if let (Some(probes), Some(during)) = (probes.as_ref(), during) {
        probes.end_during(during);
    }

    let mut outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return Exit::cannot_run(format!("the storm could not run: {error}")),
    };
    let mut restore_failed = 0;
    if let Some(summary) = &outcome.restore {
        restore_failed = summary.count(RestoreOutcome::Failed);
        if !args.quiet || restore_failed > 0 {
            eprintln!("restore: {} ({})", summary.describe(), summary.guarantee);
        }
    }
    let others_may_write =
        args.target.is_some() && spec.storm.keys.source == KeySource::Existing && !args.exclusive;
    if others_may_write {
        let judging = Judging {
            max_error_rate: plan.abort.error_rate_limit(),
            open_world: true,
        };
        mapchaos_storm::verdict::apply(&mut outcome.report, &judging);
    }
    // The map's verdict, before the probes have their say.
    let map_verdict = outcome.report.verdict;
    let probe_statuses = probes.map(|probes| {
        probes.once(ProbeStage::After);
        let statuses = probes.finish();
        crate::probes::judge(&mut outcome.report, &statuses);
        statuses
    });
    metrics.record_report(&outcome.report);
    if let (Some(path), Some(history)) = (&args.history, &outcome.history) {
        if let Err(error) = save_history(path, history) {
            return Exit::cannot_run(format!("{error:#}"));
        }
        if !args.quiet {
            eprintln!(
                "history saved to {} ({} operations)",
                path.display(),
                history.events().len()
            );
        }
    }
    if let Some(path) = &args.report {
        let mut page = mapchaos_storm::html::Page::storm(&manifest.name, &outcome.report);
        page.facts
            .push(("manifest".into(), args.file.display().to_string()));
        page.spec = serde_json::to_string_pretty(&spec).ok();
        if let Some(cluster) = &outcome.cluster {
            for node in &cluster.nodes {
                page.facts.push((
                    format!("cluster node {}", node.node),
                    format!(
                        "{} slots, {} keys, {} ops, {} errors, {} MOVED, {} ASK",
                        node.slots, node.keys, node.ops, node.errors, node.moved, node.ask
                    ),
                ));
            }
        }
        if let Err(error) = crate::html_report::write(path, &page) {
            return Exit::cannot_run(format!("{error:#}"));
        }
        if !args.quiet {
            eprintln!("report written to {}", path.display());
        }
    }
    match args.output {
        OutputFormat::Text => {
            let mut text = mapchaos_storm::report::render(&outcome.report);
            if let Some(cluster) = &outcome.cluster {
                // Before the verdict line, which stays last.
                let body = text.trim_end_matches('\n');
                let (body, verdict) = body.rsplit_once('\n').unwrap_or(("", body));
                text = format!(
                    "{}\n\n{}\n{verdict}\n",
                    body.trim_end(),
                    mapchaos_storm::cluster::report::render(cluster).trim_end()
                );
            }
            match &probe_statuses {
                // The probes go before the verdict line, which stays last.
                Some(statuses) => {
                    let text = text.trim_end_matches('\n');
                    let (body, verdict) = text.rsplit_once('\n').unwrap_or(("", text));
                    let body = body.trim_end();
                    print!("{body}\n\n{}\n{verdict}\n", crate::probes::render(statuses));
                }
                None => print!("{text}"),
            }
        }
        OutputFormat::Json => {
            let mut json = match serde_json::to_value(&outcome.report) {
                Ok(json) => json,
                Err(error) => {
                    return Exit::cannot_run(format!("cannot encode the report: {error}"));
                }
            };
            if let Some(statuses) = &probe_statuses {
                json["mapVerdict"] = serde_json::json!(map_verdict);
                json["probes"] = serde_json::json!(statuses);
            }
            if let Some(cluster) = &outcome.cluster {
                json["cluster"] = serde_json::json!(cluster);
            }
            match serde_json::to_string_pretty(&json) {
                Ok(json) => println!("{json}"),
                Err(error) => {
                    return Exit::cannot_run(format!("cannot encode the report: {error}"));
                }
            }
        }
    }
    // The process ends now: an engine holding millions of keys would take
    // seconds to free, key by key, for nothing.
    std::mem::forget(engine);
    if restore_failed > 0 {
        return Exit::cannot_run(format!(
            "the restore did not reach {restore_failed} keys (the map stopped answering): they may still be as the storm left them"
        ));
    }
    if let Some(signal) = signals.received() {
        eprintln!(
            "stopped by {}; the report covers what ran{}",
            signal.name(),
            if outcome.restore.is_some() {
                " and the keys were restored"
            } else {
                ""
            }
        );
        return Exit::signalled(signal);
    }
    if let StopReason::Stopped = outcome.report.stop_reason {
        eprintln!("stopped early on request; the report covers what ran");
    }
    let probe_failed = probe_statuses
        .as_deref()
        .is_some_and(|s| !mapchaos_api::probe::failed_names(s).is_empty());
    if probe_failed && map_verdict != mapchaos_api::Verdict::Fail {
        return Exit::probe_failed();
    }
    exit_for_verdict(outcome.report.verdict)
}

/// A `before` probe failed: print the probes (and, as JSON, a verdict with
/// no storm report) and exit without storming.
fn before_failed(probes: &LocalProbes, failed: &[(String, String)], output: OutputFormat) -> Exit {
    let (name, message) = &failed[0];
    let reason = format!("probe {name} failed before the storm ({message}); no storm ran");
    let statuses = probes.statuses();
    match output {
        OutputFormat::Text => {
            print!("{}", crate::probes::render(&statuses));
            println!(
                "{}",
                mapchaos_storm::report::verdict_line(mapchaos_api::Verdict::Fail, &reason)
            );
        }
        OutputFormat::Json => {
            let json = serde_json::json!({
                "verdict": mapchaos_api::Verdict::Fail,
                "verdictReason": reason,
                "probes": statuses,
            });
            println!("{json:#}");
        }
    }
    Exit::not_started(reason)
}

fn save_history(path: &PathBuf, history: &mapchaos_storm::History) -> anyhow::Result<()> {
    let json = history.to_json().context("cannot encode the history")?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
}

/// A restore over the network sees the application's writes through
/// `MONITOR`; without it, it could revert them. Refused before anything is
/// touched unless `--restore-unwatched` accepts that.
fn watch_app_writes(
    watch: impl FnOnce() -> Result<(), mapchaos_storm::monitor::WatchError>,
    url: &str,
    args: &RunArgs,
) -> Result<(), Exit> {
    let Err(error) = watch() else {
        return Ok(());
    };
    if args.restore_unwatched {
        eprintln!(
            "warning: the application's writes to --target {url} cannot be watched ({error}); \
             restoring anyway (--restore-unwatched): a key the application wrote and the storm \
             then overwrote or deleted gets its original back, and every key put back is \
             reported restored_unwatched"
        );
        return Ok(());
    }
    Err(Exit::cannot_run(format!(
        "cannot watch the application's writes on --target {url}: {error}.\n\
         spec.storm.restore on existing keys watches them with MONITOR, so that a key the \
         application writes during the storm keeps the application's value; nothing was \
         touched. Either allow MONITOR for this user (ACL SETUSER <user> +monitor, or undo \
         rename-command MONITOR), run the storm in the sidecar, set spec.storm.restore: false, \
         or pass --restore-unwatched to restore without the watch (an application write that \
         the storm overwrote or deleted is then reverted)"
    )))
}

/// A random seed a manifest can carry (`spec.seed` is at most 2^53-1).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) & MAX_SEED
}

/// The flags checked before anything runs: the target's URL, the files the
/// storm will write, the flags that size time and threads.
fn check_flags(args: &RunArgs) -> Result<(), String> {
    if let Some(url) = &args.target {
        preflight::target_url(url)?;
    }
    if let Some(path) = &args.history {
        preflight::output_path("--history", path)?;
    }
    preflight::request_timeout(args.request_timeout.0)?;
    preflight::check_threads(args.check_threads)?;
    if args.engine == EngineKind::Lagging && args.lag_ms == 0 {
        return Err("--lag-ms must be at least 1".into());
    }
    Ok(())
}

/// The live progress bar: phase, elapsed of total, ops, ops/s, errors.
struct Progress {
    pub(crate) bar: ProgressBar,
    last: std::cell::Cell<(Instant, u64)>,
}

impl Progress {
    fn start(control: &StormControl, duration: Duration, hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(
                Some(duration.as_millis() as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>9} [{bar:30}] {msg}")
                    .expect("a valid progress template")
                    .progress_chars("=> "),
            );
            bar
        };
        let _ = control;
        Progress {
            bar,
            last: std::cell::Cell::new((Instant::now(), 0)),
        }
    }

    fn tick(&self, control: &StormControl) {
        let live = control.live();
        let (then, ops_then) = self.last.get();
        let rate =
            (live.ops.saturating_sub(ops_then)) as f64 / then.elapsed().as_secs_f64().max(1e-3);
        if then.elapsed() >= Duration::from_millis(500) {
            self.last.set((Instant::now(), live.ops));
        }
        self.bar.set_prefix(phase_name(live.phase));
        self.bar.set_position(live.elapsed.as_millis() as u64);
        self.bar.set_message(format!(
            "{:.0}s  {} ops  {:.0} ops/s  {} errors",
            live.elapsed.as_secs_f64(),
            live.ops,
            rate,
            live.errors
        ));
        self.bar.tick();
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn phase_name(phase: StormPhase) -> &'static str {
    match phase {
        StormPhase::Preparing => "preparing",
        StormPhase::Running => "storming",
        StormPhase::Checking => "checking",
        StormPhase::Restoring => "restoring",
        StormPhase::Completed => "done",
        StormPhase::Aborted => "aborted",
        StormPhase::Failed => "failed",
    }
}
