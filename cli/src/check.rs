//! `mapchaos check FILE`: re-check a history saved by `mapchaos run --history`
//! (or the sidecar's `/v1/storms/{id}/history`) and print the verdict with
//! its witnesses.

use std::path::PathBuf;

use mapchaos_api::GoDuration;
use mapchaos_storm::{CheckOptions, History, check};

use crate::exit::{Exit, exit_for_verdict};
use crate::run::OutputFormat;

/// `mapchaos check FILE`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 pass, 1 anomalies found, 2 bad input, 3 inconclusive.")]
pub struct CheckArgs {
    /// A history file written by `mapchaos run --history`.
    pub file: PathBuf,

    /// Time budget of the linearizability search per key; a key that runs
    /// out is `unknown`, never `ok`.
    #[arg(long, default_value = "10s")]
    pub timeout_per_key: GoDuration,

    /// Threads for the checker (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Witnesses kept in the report.
    #[arg(long, default_value_t = 20)]
    pub max_witnesses: usize,

    /// Also write a self-contained HTML report here (verdict, tables and a
    /// timeline per anomalous key); opens offline in any browser.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub fn run(args: CheckArgs) -> Exit {
    if let Some(path) = &args.report
        && let Err(error) = crate::html_report::check_writable(path)
    {
        return Exit::bad_input(format!("--report {}: {error}", path.display()));
    }
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(error) => {
            return Exit::bad_input(format!("cannot read {}: {error}", args.file.display()));
        }
    };
    let history = match History::from_json(&text) {
        Ok(history) => history,
        Err(error) => return Exit::bad_input(format!("{}: {error}", args.file.display())),
    };
    let options = CheckOptions {
        per_key_budget: args.timeout_per_key.0,
        threads: args.threads,
        max_witnesses: args.max_witnesses,
        cancel: None,
        ..CheckOptions::default()
    };
    let report = check(&history, &options);
    if let Some(path) = &args.report {
        let title = args.file.file_name().map_or_else(
            || args.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut page = mapchaos_storm::html::Page::check(title, &report);
        page.facts.push((
            "history".into(),
            format!(
                "{}: {} operations on {} keys",
                args.file.display(),
                history.events().len(),
                history.keys().len()
            ),
        ));
        if let Err(error) = crate::html_report::write(path, &page) {
            return Exit::cannot_run(format!("{error:#}"));
        }
    }
    match args.output {
        OutputFormat::Text => {
            println!(
                "{}: {} operations on {} keys",
                args.file.display(),
                history.events().len(),
                history.keys().len()
            );
            print!("{}", mapchaos_storm::report::render_check(&report));
            println!();
            let (verdict, reason) = mapchaos_storm::verdict::check_verdict(&report);
            println!("{}", mapchaos_storm::report::verdict_line(verdict, &reason));
        }
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => return Exit::cannot_run(format!("cannot encode the report: {error}")),
        },
    }
    exit_for_verdict(report.verdict)
}
