//! `mapchaos report mc/NAME -o DIR`: the storm reports the operator kept in
//! Secrets, read with the user's kubeconfig, written as one page per target
//! and an index of the experiment's runs (targets, phases, verdicts, links).
//! Nothing but RBAC on Secrets and MapChaos in the namespace is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use mapchaos_api::MapChaos;
use mapchaos_operator::report_store::selector;
use mapchaos_operator::reports::{
    DATA_KEY, PHASE_ANNOTATION, POD_ANNOTATION, RUN_LABEL, STORM_ANNOTATION, TRIMMED_ANNOTATION,
    VERDICT_ANNOTATION, gunzip,
};

use crate::exit::Exit;

/// The most a stored page may inflate to: a Secret anyone with write access
/// to the namespace could have replaced must not fill the disk.
const MAX_PAGE_BYTES: u64 = 64 << 20;

/// `mapchaos report`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    mapchaos report mc/cart-storm -n shop -o reports/ && xdg-open reports/index.html\n\n\
    Reads the Secrets the operator keeps each finished target's report in \
    (status.targets[].reportSecret) with your kubeconfig: it needs get on the MapChaos \
    and list on Secrets in its namespace, nothing else.\n\n\
    Exit status: 0 reports written, 2 bad input, 4 no such MapChaos, no reports yet, \
    no access or no cluster.")]
pub struct ReportArgs {
    /// The experiment: mc/NAME (or mapchaos/NAME, or NAME).
    pub experiment: String,

    /// Its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// Only this run's reports (default: every run the operator keeps).
    #[arg(long)]
    pub run: Option<u32>,

    /// The directory to write index.html and the pages into (created).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// One stored report.
struct Stored {
    run: u32,
    pod: String,
    storm_id: String,
    phase: String,
    verdict: String,
    trimmed: Option<String>,
    file: String,
}

pub fn run(args: ReportArgs) -> Exit {
    let name = match args.experiment.split_once('/') {
        Some(("mc" | "mapchaos" | "mapchaos.mapchaos.io", name)) => name,
        Some((kind, _)) => {
            return Exit::bad_input(format!(
                "{:?}: the experiment is mc/NAME (got the kind {kind:?})",
                args.experiment
            ));
        }
        None => args.experiment.as_str(),
    };
    if name.is_empty() || name.contains('/') {
        return Exit::bad_input(format!("{:?}: the experiment is mc/NAME", args.experiment));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Exit::cannot_run(format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(write_reports(name, &args)) {
        Ok(summary) => {
            println!("{summary}");
            Exit::success()
        }
        Err(message) => Exit::cannot_run(message),
    }
}

/// Why a Kubernetes call failed, in words that say what to do.
fn explain(what: &str, namespace: &str, error: kube::Error) -> String {
    match &error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "{what} in namespace {namespace}: forbidden ({}); ask for RBAC to get mapchaos and list secrets there",
            status.message
        ),
        _ => format!("{what} in namespace {namespace}: {error}"),
    }
}

async fn write_reports(name: &str, args: &ReportArgs) -> Result<String, String> {
    let client = Client::try_default()
        .await
        .map_err(|error| format!("cannot reach a cluster from the kubeconfig: {error}"))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let experiments: Api<MapChaos> = Api::namespaced(client.clone(), &namespace);
    let experiment = experiments
        .get_opt(name)
        .await
        .map_err(|e| explain(&format!("reading mc/{name}"), &namespace, e))?
        .ok_or_else(|| format!("no MapChaos {name} in namespace {namespace}"))?;
    let uid = experiment.uid().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let list = secrets
        .list(&ListParams::default().labels(&selector(&uid)))
        .await
        .map_err(|e| explain("listing the report Secrets", &namespace, e))?;

    std::fs::create_dir_all(&args.output)
        .map_err(|e| format!("-o {}: cannot create it: {e}", args.output.display()))?;
    let mut stored = Vec::new();
    for secret in &list.items {
        let labels = secret.labels();
        let annotations = secret.annotations();
        let Some(run) = labels.get(RUN_LABEL).and_then(|r| r.parse::<u32>().ok()) else {
            continue;
        };
        if args.run.is_some_and(|wanted| wanted != run) {
            continue;
        }
        let text = |key: &str| annotations.get(key).cloned().unwrap_or_default();
        let secret_name = secret.name_any();
        let Some(data) = secret.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
            return Err(format!("Secret {secret_name} holds no {DATA_KEY}"));
        };
        let page = gunzip(&data.0, MAX_PAGE_BYTES)
            .map_err(|error| format!("Secret {secret_name}: {error}"))?;
        let file = format!("{secret_name}.html");
        write_atomically(&args.output.join(&file), &page)?;
        stored.push(Stored {
            run,
            pod: text(POD_ANNOTATION),
            storm_id: text(STORM_ANNOTATION),
            phase: text(PHASE_ANNOTATION),
            verdict: text(VERDICT_ANNOTATION),
            trimmed: annotations.get(TRIMMED_ANNOTATION).cloned(),
            file,
        });
    }
    if stored.is_empty() {
        let which = args
            .run
            .map_or_else(String::new, |run| format!(" for run {run}"));
        return Err(format!(
            "mc/{name} in namespace {namespace} has no reports yet{which}: the operator keeps a \
             report once a target's storm finishes (status.targets[].reportSecret)"
        ));
    }
    stored.sort_by(|a, b| (b.run, &a.pod).cmp(&(a.run, &b.pod)));
    let index = index_page(&experiment, &namespace, &stored);
    write_atomically(&args.output.join("index.html"), index.as_bytes())?;
    Ok(format!(
        "{} reports of mc/{name} written to {}",
        stored.len(),
        args.output.join("index.html").display()
    ))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The index: the experiment, then each run (newest first) with its phase
/// and verdict from the status, and a row per target linking its page.
fn index_page(experiment: &MapChaos, namespace: &str, stored: &[Stored]) -> String {
    let name = experiment.name_any();
    let runs: BTreeMap<u32, (String, String)> = experiment
        .status
        .iter()
        .flat_map(|s| &s.runs)
        .map(|r| {
            (
                r.run,
                (
                    format!("{:?}", r.phase),
                    r.verdict
                        .map_or_else(|| "none".into(), |v| format!("{v:?}")),
                ),
            )
        })
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mapchaos reports: {name}</title><style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}.Fail{{color:#b71c1c;font-weight:bold}}.Pass{{color:#1b5e20;font-weight:bold}}</style></head><body><h1>mapchaos reports: <span id="experiment">{name}</span></h1><p>MapChaos <code>{name}</code> in namespace <code>{ns}</code>, uid <code>{uid}</code>.</p>"#,
        name = esc(&name),
        ns = esc(namespace),
        uid = esc(&experiment.uid().unwrap_or_default()),
    );
    let mut current = None;
    for report in stored {
        if current != Some(report.run) {
            if current.is_some() {
                out.push_str("</table>");
            }
            current = Some(report.run);
            let (phase, verdict) = runs
                .get(&report.run)
                .cloned()
                .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
            let _ = write!(
                out,
                r#"<h2 class="run" data-run="{run}">Run {run}: {phase}, verdict <span class="{v}">{v}</span></h2><table><tr><th>target</th><th>phase</th><th>verdict</th><th>report</th></tr>"#,
                run = report.run,
                phase = esc(&phase),
                v = esc(&verdict),
            );
        }
        let trimmed = report.trimmed.as_ref().map_or_else(String::new, |n| {
            format!(" (trimmed to {} timelines)", esc(n))
        });
        let _ = write!(
            out,
            r#"<tr class="target" data-verdict="{v}"><td>{pod}</td><td>{phase}</td><td class="{v}">{v}</td><td><a href="{file}" title="storm {id}">report</a>{trimmed}</td></tr>"#,
            v = esc(&report.verdict),
            pod = esc(&report.pod),
            phase = esc(&report.phase),
            file = esc(&report.file),
            id = esc(&report.storm_id),
        );
    }
    out.push_str("</table></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_lists_runs_newest_first_with_escaped_links_to_each_page() {
        let experiment = MapChaos::new("cart<storm>", serde_json::from_str("{}").unwrap());
        let report = |run, pod: &str, verdict: &str| Stored {
            run,
            pod: pod.into(),
            storm_id: format!("id-{run}"),
            phase: "Completed".into(),
            verdict: verdict.into(),
            trimmed: (verdict == "Fail").then(|| "5".into()),
            file: format!("mapchaos-report-id-{run}-{pod}.html"),
        };
        let stored = [
            report(2, "shop/cart-0", "Fail"),
            report(2, "shop/cart-1", "Pass"),
            report(1, "shop/cart-0", "Pass"),
        ];
        let html = index_page(&experiment, "shop", &stored);
        assert!(html.contains("cart&lt;storm&gt;") && !html.contains("cart<storm>"));
        assert_eq!(html.matches(r#"<h2 class="run""#).count(), 2);
        assert!(html.find(r#"data-run="2""#) < html.find(r#"data-run="1""#));
        assert_eq!(html.matches(r#"<tr class="target""#).count(), 3);
        assert!(html.contains(r#"href="mapchaos-report-id-2-shop/cart-0.html""#));
        assert!(html.contains("(trimmed to 5 timelines)"));
    }
}
