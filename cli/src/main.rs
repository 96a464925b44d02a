//! `mapchaos`: one binary for every role — the map-service sidecar, the local
//! storm runner, the history checker, the CRD generator and the operator.

mod check;
mod cluster_notes;
mod demo_app;
mod exit;
mod fetch;
mod html_report;
mod manifest;
mod metrics_server;
mod operator;
mod preflight;
mod probes;
mod report;
mod run;
mod signals;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "mapchaos", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a MapChaos storm locally — against an embedded map engine, or any
    /// Redis-protocol server with --target — and print the race report.
    Run(run::RunArgs),
    /// Re-check a saved storm history and print the verdict with witnesses.
    Check(check::CheckArgs),
    /// Read a storm's status, report or history from a target's sidecar
    /// with a GET signed by the operator's key for that pod.
    Fetch(fetch::FetchArgs),
    /// Write the storm reports the operator kept for a MapChaos (mc/NAME)
    /// into a directory, with an index of its runs.
    Report(report::ReportArgs),
    /// Run the map service: a concurrent in-memory map speaking the Redis
    /// protocol, with /metrics, /healthz and /readyz over HTTP.
    Sidecar(mapchaos_sidecar::SidecarArgs),
    /// Run the operator: reconcile MapChaos resources into signed storms on
    /// their target pods, with /metrics, /healthz and /readyz over HTTP.
    Operator(Box<operator::OperatorArgs>),
    /// Print the MapChaos CustomResourceDefinition as YAML (what crds/ holds).
    Crd,
    /// Before uninstalling the operator: scale it to 0, then take its
    /// finalizer off every MapChaos so none is left undeletable (the chart
    /// runs this as a pre-delete hook). Running storms stop at their lease.
    Release(operator::ReleaseArgs),
    /// Run a small shopping-cart service that keeps its carts in a map (the
    /// sidecar next to it), so a storm has an application to hurt; it
    /// reports its latency, errors and carts lost or overwritten.
    DemoApp(demo_app::DemoAppArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args).report(),
        Command::Check(args) => check::run(args).report(),
        Command::Fetch(args) => fetch::run(args).report(),
        Command::Report(args) => report::run(args).report(),
        Command::Crd => {
            print!("{}", mapchaos_api::resource::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Sidecar(args) => {
            if let Err(message) = args.validate() {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
            if let Err(error) = telemetry::init(args.log_format, &args.log) {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
            run_service(|shutdown| mapchaos_sidecar::run(args, shutdown))
        }
        Command::DemoApp(args) => {
            if let Err(error) = telemetry::init(args.log_format, &args.log) {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
            run_service(|shutdown| demo_app::run(args, shutdown))
        }
        Command::Release(args) => {
            if let Err(error) = telemetry::init(args.log_format, &args.log) {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
            run_service(|shutdown| operator::release(args, shutdown))
        }
        Command::Operator(args) => {
            if let Err(error) = telemetry::init(args.log_format, &args.log) {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
            run_service(|shutdown| operator::run(*args, shutdown))
        }
    }
}

/// Run a long-lived service on a multi-threaded runtime until SIGTERM or
/// Ctrl-C, then let it drain.
fn run_service<F, Fut>(service: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match service(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "fatal");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM, SIGINT or SIGHUP starts the shutdown; later ones are logged and
/// change nothing: a storm's restore always finishes (only SIGKILL cuts it).
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::hangup(), "SIGHUP"),
    ];
    let mut streams = Vec::new();
    for (kind, name) in kinds {
        match signal(kind) {
            Ok(stream) => streams.push((stream, name)),
            Err(error) => tracing::warn!(%error, signal = name, "cannot listen for a signal"),
        }
    }
    if streams.is_empty() {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        return;
    }
    let mut first = true;
    loop {
        let name = next_signal(&mut streams).await;
        if first {
            tracing::info!("{name} received: shutting down");
            shutdown.cancel();
            first = false;
        } else {
            tracing::warn!(
                signal = name,
                "already shutting down: a running storm's restore finishes first (only SIGKILL cuts it short)"
            );
        }
    }
}

/// The name of the next signal any of `streams` delivers.
async fn next_signal(streams: &mut [(tokio::signal::unix::Signal, &'static str)]) -> &'static str {
    std::future::poll_fn(|cx| {
        for (stream, name) in streams.iter_mut() {
            if stream.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
