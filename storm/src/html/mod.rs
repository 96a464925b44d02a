//! The storm report as one self-contained HTML page: the verdict and why,
//! the storm's facts and spec, per-second charts, the tables, and a
//! timeline per anomalous key. No external asset: the CSS, the SVG and a
//! few lines of script are inline, so the file works offline from file://.

mod svg;
mod timeline;

use std::fmt::Write as _;

use mapchaos_api::storm::{LatencySummary, MemorySnapshot, StopReason, StormReport};
use mapchaos_api::{CheckReport, Verdict};

use svg::{Line, Marker, count, esc, micros};

/// How many anomalous keys get a timeline; the rest are counted.
pub const MAX_TIMELINES: usize = 20;

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// What a page shows: a whole storm, or a re-checked history.
pub struct Page<'a> {
    /// The page title (what was stormed or checked).
    pub title: String,
    /// The storm, when the page is for one (`mapchaos run`, the sidecar).
    pub storm: Option<&'a StormReport>,
    /// The check; for a storm, its report's check.
    pub check: Option<&'a CheckReport>,
    /// The storm's spec as YAML, when known.
    pub spec: Option<String>,
    /// Facts shown under the title (name, value), e.g. the history file.
    pub facts: Vec<(String, String)>,
    /// Fewer timelines than [`MAX_TIMELINES`], and why (a page that must
    /// fit a size limit): the page says how many it left out.
    pub trim: Option<Trim>,
}

/// A page cut to fewer timelines than it would show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    /// The most timelines drawn.
    pub max_timelines: usize,
    /// Why, as the page says it: "to fit a Kubernetes Secret".
    pub why: String,
}

impl<'a> Page<'a> {
    /// The page of a storm report.
    pub fn storm(title: impl Into<String>, report: &'a StormReport) -> Page<'a> {
        Page {
            title: title.into(),
            storm: Some(report),
            check: report.check.as_ref(),
            spec: None,
            facts: Vec::new(),
            trim: None,
        }
    }

    /// The page of a re-checked history.
    pub fn check(title: impl Into<String>, check: &'a CheckReport) -> Page<'a> {
        Page {
            title: title.into(),
            storm: None,
            check: Some(check),
            spec: None,
            facts: Vec::new(),
            trim: None,
        }
    }
}

/// The verdict and its reason, as the text report states them.
fn verdict_of(page: &Page<'_>) -> (Verdict, String) {
    match (page.storm, page.check) {
        (Some(storm), check) => {
            let reason = if storm.verdict_reason.is_empty() {
                check
                    .map(|c| crate::verdict::check_verdict(c).1)
                    .unwrap_or_default()
            } else {
                storm.verdict_reason.clone()
            };
            (storm.verdict, reason)
        }
        (None, Some(check)) => crate::verdict::check_verdict(check),
        (None, None) => (Verdict::Inconclusive, "nothing was checked.".to_owned()),
    }
}

/// The whole page.
pub fn render(page: &Page<'_>) -> String {
    let (verdict, reason) = verdict_of(page);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} — mapchaos {}</title><style>{CSS}</style></head><body><main>"#,
        verdict.word(),
        esc(&page.title)
    );
    let _ = write!(
        out,
        r#"<h1>mapchaos report: {}</h1><div class="verdict {}" id="verdict"><span class="word">{}</span><span class="reason" id="verdict-reason">{}</span></div>"#,
        esc(&page.title),
        verdict.word().to_ascii_lowercase(),
        verdict.word(),
        esc(&reason)
    );
    facts(&mut out, page);
    if let Some(check) = page.check {
        broke(&mut out, check, timeline_cap(page.trim.as_ref()));
    }
    if let Some(storm) = page.storm {
        charts(&mut out, storm);
    }
    tables(&mut out, page);
    if let Some(check) = page.check {
        timelines(&mut out, check, page.trim.as_ref());
    }
    if let Some(spec) = &page.spec {
        let _ = write!(out, r#"<h2>Spec</h2><pre class="spec">{}</pre>"#, esc(spec));
    }
    let _ = write!(
        out,
        r#"<div id="tooltip" hidden></div></main><script>{JS}</script></body></html>"#
    );
    out
}

fn facts(out: &mut String, page: &Page<'_>) {
    out.push_str(r#"<dl class="facts">"#);
    let mut row = |name: &str, value: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(name), esc(&value));
    };
    for (name, value) in &page.facts {
        row(name, value.clone());
    }
    if let Some(storm) = page.storm {
        row("target", storm.target.clone());
        row(
            "storm",
            format!(
                "{} workers for {:.1} s, seed {}",
                storm.workers,
                storm.elapsed_millis as f64 / 1000.0,
                storm.seed
            ),
        );
        row("stopped", stop_text(&storm.stop_reason));
        row(
            "operations",
            format!(
                "{} ({:.0} ops/s), {} errors ({:.3}%)",
                count(storm.ops),
                storm.ops_per_second,
                count(storm.errors),
                percent(storm.errors, storm.ops)
            ),
        );
    }
    if let Some(check) = page.check {
        row(
            "keys",
            format!(
                "{} ok, {} illegal, {} unknown; {} operations checked ({} of known outcome)",
                count(check.keys.ok),
                count(check.keys.illegal),
                count(check.keys.unknown),
                count(check.ops_checked),
                count(check.ops_known)
            ),
        );
    }
    out.push_str("</dl>");
    if page.check.is_some_and(|c| c.truncated) {
        out.push_str(r#"<p class="warn" id="truncated">The history was truncated at <code>check.maxOps</code>: only a prefix of the storm was recorded and checked.</p>"#);
    }
}

fn stop_text(reason: &StopReason) -> String {
    match reason {
        StopReason::DurationElapsed => "duration elapsed".to_owned(),
        StopReason::AbortCondition(why) => format!("aborted: {why}"),
        StopReason::Stopped => "stopped on request".to_owned(),
        StopReason::LeaseExpired => "lease expired (no renewal from the controller)".to_owned(),
    }
}

/// Which keys broke, one line each, linking to their timelines.
fn broke(out: &mut String, check: &CheckReport, drawn: usize) {
    if check.witnesses.is_empty() {
        return;
    }
    out.push_str(r#"<h2>Which keys broke</h2><ul class="broke">"#);
    for (i, witness) in check.witnesses.iter().take(MAX_TIMELINES).enumerate() {
        // A trimmed page has no timeline to link to past the ones it draws.
        let (open, close) = if i < drawn {
            (format!(r##"<a href="#w{i}">"##), "</a>")
        } else {
            (String::new(), "")
        };
        let _ = write!(
            out,
            r#"<li>{open}<b>{}</b> on key <code>{}</code>{close} — {}</li>"#,
            witness.kind,
            esc(&witness.key),
            esc(&witness.explanation)
        );
    }
    out.push_str("</ul>");
    let rest = check
        .total_anomalies()
        .saturating_sub(check.witnesses.len().min(MAX_TIMELINES) as u64);
    if rest > 0 {
        let _ = write!(
            out,
            r#"<p class="note" id="more-anomalies">… and anomalies on {} more keys without a timeline here (the checker keeps the first witnesses; <code>mapchaos check --max-witnesses</code> keeps more).</p>"#,
            count(rest)
        );
    }
}

fn charts(out: &mut String, storm: &StormReport) {
    let Some(series) = storm.series.as_ref().filter(|s| !s.is_empty()) else {
        return;
    };
    let bucket = series.bucket_millis.max(1) as f64 / 1000.0;
    let window = storm.elapsed_millis as f64 / 1000.0;
    let mut markers = Vec::new();
    match &storm.stop_reason {
        StopReason::DurationElapsed => {}
        StopReason::AbortCondition(why) => markers.push(Marker {
            at_seconds: window,
            label: format!("aborted: {why}"),
        }),
        StopReason::Stopped => markers.push(Marker {
            at_seconds: window,
            label: "stopped on request".into(),
        }),
        StopReason::LeaseExpired => markers.push(Marker {
            at_seconds: window,
            label: "lease expired".into(),
        }),
    }
    // The last bucket is usually cut short by the storm's end: its rate is
    // over the part that ran, and a sliver of one is left out of the charts.
    let width = |i: usize| (window - i as f64 * bucket).min(bucket);
    let shown = (0..series.len())
        .take_while(|&i| width(i) >= 0.2 * bucket)
        .count()
        .max(1);
    let per_second = |v: Vec<u64>| {
        v.into_iter()
            .take(shown)
            .enumerate()
            .map(|(i, n)| n as f64 / width(i).max(0.2 * bucket))
            .collect::<Vec<_>>()
    };
    out.push_str("<h2>Over time</h2>");
    let _ = write!(out, "<h3>Throughput and errors (per second)</h3>");
    out.push_str(&svg::line_chart(
        "chart-throughput",
        "operations per second",
        &svg::Scale {
            bucket_seconds: bucket,
            window_seconds: window,
            format: svg::short,
            log: false,
        },
        &[
            Line {
                name: "ops/s",
                color: "#1e6fd0",
                values: per_second(series.total_ops()),
                dashed: false,
            },
            Line {
                name: "errors/s",
                color: "#d32f2f",
                values: per_second(series.total_errors()),
                dashed: false,
            },
        ],
        &markers,
    ));
    if !series.exposures.is_empty() {
        out.push_str("<h3>Race exposures (truly concurrent pairs per second)</h3>");
        out.push_str(&svg::line_chart(
            "chart-exposures",
            "exposures per second",
            &svg::Scale {
                bucket_seconds: bucket,
                window_seconds: window,
                format: svg::short,
                log: false,
            },
            &[Line {
                name: "exposures/s",
                color: "#7b1fa2",
                values: per_second(series.exposures.clone()),
                dashed: false,
            }],
            &markers,
        ));
    }
    out.push_str("<h3>Latency per operation (p50 solid, p99 dashed; log scale)</h3>");
    const COLORS: [&str; 5] = ["#1e6fd0", "#e07b00", "#1f8a4c", "#7b1fa2", "#6d4c41"];
    let mut lines = Vec::new();
    let names: Vec<String> = series.by_op.keys().map(|k| k.to_uppercase()).collect();
    let p50: Vec<String> = names.iter().map(|n| format!("{n} p50")).collect();
    let p99: Vec<String> = names.iter().map(|n| format!("{n} p99")).collect();
    for (i, op) in series.by_op.values().enumerate() {
        let color = COLORS[i % COLORS.len()];
        lines.push(Line {
            name: &p50[i],
            color,
            values: op
                .p50_micros
                .iter()
                .take(shown)
                .map(|&v| v as f64)
                .collect(),
            dashed: false,
        });
        lines.push(Line {
            name: &p99[i],
            color,
            values: op
                .p99_micros
                .iter()
                .take(shown)
                .map(|&v| v as f64)
                .collect(),
            dashed: true,
        });
    }
    out.push_str(&svg::line_chart(
        "chart-latency",
        "latency",
        &svg::Scale {
            bucket_seconds: bucket,
            window_seconds: window,
            format: |v| micros(v.round() as u64).replace(".00 ", " "),
            log: true,
        },
        &lines,
        &markers,
    ));
}

fn cell(value: u64) -> String {
    if value == 0 {
        r#"<td class="zero">0</td>"#.to_owned()
    } else {
        format!("<td>{}</td>", count(value))
    }
}

fn latency_row(out: &mut String, name: &str, ops: u64, errors: u64, l: &LatencySummary) {
    let _ = write!(
        out,
        "<tr><td>{}</td>{}{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(name),
        cell(ops),
        cell(errors),
        micros(l.p50_micros),
        micros(l.p90_micros),
        micros(l.p99_micros),
        micros(l.p999_micros),
        micros(l.max_micros)
    );
}

fn memory_cell(m: &MemorySnapshot) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "—".to_owned(), bytes);
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        count(m.keys),
        opt(m.live_bytes),
        opt(m.held_bytes),
        opt(m.rss_bytes)
    )
}

fn tables(out: &mut String, page: &Page<'_>) {
    out.push_str("<h2>Numbers</h2>");
    if let Some(storm) = page.storm {
        out.push_str(r#"<table id="ops-table"><tr><th>op</th><th>ops</th><th>errors</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>"#);
        for (name, stats) in &storm.by_op {
            latency_row(
                out,
                &name.to_uppercase(),
                stats.ops,
                stats.errors,
                &stats.latency,
            );
        }
        latency_row(
            out,
            "all storm ops",
            storm.ops,
            storm.errors,
            &storm.latency,
        );
        if let Some(app) = &storm.client_latency {
            latency_row(out, "application", app.count, 0, app);
        }
        out.push_str("</table>");
        out.push_str(r#"<table id="memory-table"><tr><th>memory</th><th>keys</th><th>live</th><th>held</th><th>rss</th></tr>"#);
        let _ = write!(
            out,
            "<tr><td>before</td>{}</tr><tr><td>after</td>{}</tr></table>",
            memory_cell(&storm.memory_before),
            memory_cell(&storm.memory_after)
        );
        if storm.keys_excluded > 0 || storm.restored_keys > 0 {
            let _ = write!(
                out,
                r#"<p class="note">{} keys restored after the storm; {} keys left out of the check (the application changed them in ways the history does not hold).</p>"#,
                count(storm.restored_keys),
                count(storm.keys_excluded)
            );
        }
    }
    let Some(check) = page.check else {
        out.push_str(
            r#"<p class="note">Race check: off (<code>spec.check.history: false</code>).</p>"#,
        );
        return;
    };
    out.push_str(r#"<div class="tables">"#);
    out.push_str(r#"<table id="exposures-table"><tr><th>exposure</th><th>pairs</th></tr>"#);
    for (kind, n) in &check.exposures {
        let _ = write!(out, "<tr><td>{kind}</td>{}</tr>", cell(*n));
    }
    let _ = write!(
        out,
        "<tr><td><b>total</b></td>{}</tr><tr><td>max overlap on one key</td>{}</tr></table>",
        cell(check.total_exposures()),
        cell(check.max_overlap)
    );
    out.push_str(r#"<table id="anomalies-table"><tr><th>anomaly</th><th>keys</th></tr>"#);
    for (kind, n) in &check.anomalies {
        let _ = write!(out, "<tr><td>{kind}</td>{}</tr>", cell(*n));
    }
    let _ = write!(
        out,
        "<tr><td><b>keys with any anomaly</b></td>{}</tr></table>",
        cell(check.total_anomalies())
    );
    let _ = write!(
        out,
        r#"<table id="keys-table"><tr><th>keys</th><th>count</th></tr><tr><td>ok</td>{}</tr><tr><td>illegal</td>{}</tr><tr><td>unknown</td>{}</tr><tr><td>ops checked</td>{}</tr><tr><td>ops of known outcome</td>{}</tr><tr><td>SCAN duplicates (allowed)</td>{}</tr><tr><td>truncated</td><td>{}</td></tr></table>"#,
        cell(check.keys.ok),
        cell(check.keys.illegal),
        cell(check.keys.unknown),
        cell(check.ops_checked),
        cell(check.ops_known),
        cell(check.scan_duplicates),
        if check.truncated { "yes" } else { "no" }
    );
    out.push_str("</div>");
}

/// How many timelines a page draws.
fn timeline_cap(trim: Option<&Trim>) -> usize {
    trim.map_or(MAX_TIMELINES, |t| t.max_timelines.min(MAX_TIMELINES))
}

fn timelines(out: &mut String, check: &CheckReport, trim: Option<&Trim>) {
    if check.witnesses.is_empty() {
        return;
    }
    let cap = timeline_cap(trim);
    let would_draw = check.witnesses.len().min(MAX_TIMELINES);
    if let Some(trim) = trim
        && cap < would_draw
    {
        let _ = write!(
            out,
            r#"<p class="warn" id="trimmed">This report was trimmed {}: it draws {} of its {} timelines. The witness sentences above name every key; <code>mapchaos fetch</code> reads the whole report from the sidecar while it keeps the storm.</p>"#,
            esc(&trim.why),
            cap,
            would_draw
        );
    }
    out.push_str(r#"<h2>Timelines of the anomalous keys</h2><p class="note">One lane per client; each bar runs from the operation's call to its return. <b style="color:#d32f2f">Red</b>: the operation that cannot be explained; <b style="color:#1e6fd0">blue</b>: the witness's other operations; grey: the key's other operations nearby; hatched: no reply (it may or may not have taken effect); a <b style="color:#1f8a4c">green underline</b>: placed in the longest legal prefix; purple: a SCAN's span. Bars are in event order — each step is the next call or return, so gaps are not to scale; the axis gives real times since the storm started. Hover a bar for its exact times and the values before and after; wheel or the buttons zoom, drag pans, double-click frames the witness again; the first view frames the witness's operations, <i>all</i> shows the context around them.</p>"#);
    for (i, witness) in check.witnesses.iter().take(cap).enumerate() {
        let timeline = timeline::of(witness);
        let _ = write!(
            out,
            r#"<section class="card witness" id="w{i}" data-kind="{}" data-operations="{}"><div class="zoom" data-zoom-for="tl{i}"><button data-zoom="in">zoom in</button><button data-zoom="out">zoom out</button><button data-zoom="reset" title="frame the witness's operations">witness</button><button data-zoom="all" title="every operation drawn">all</button></div><h3><span class="kind">{}</span> on key <code>{}</code></h3><p class="sentence">{}</p>"#,
            witness.kind,
            witness.operations.len(),
            witness.kind,
            esc(&witness.key),
            esc(&witness.explanation)
        );
        if let Some(prefix) = &witness.longest_prefix {
            let _ = write!(
                out,
                r#"<p class="note">Longest linearizable prefix: {} operations, leaving the key {}{}.</p>"#,
                count(prefix.length),
                esc(&prefix.state),
                if prefix.length > 0 {
                    " (its operations drawn here have a green underline)"
                } else {
                    ""
                }
            );
        }
        let _ = write!(
            out,
            r#"<div class="scroll">{}</div>"#,
            timeline::svg(&format!("tl{i}"), &timeline)
        );
        if timeline.omitted > 0 {
            let _ = write!(
                out,
                r#"<p class="note">{} more operations of this key are not drawn (the timeline keeps the witness and its nearest neighbours).</p>"#,
                count(timeline.omitted)
            );
        }
        out.push_str("</section>");
    }
}

fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scaled = value as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{scaled:.1} {}", UNITS[unit])
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests;
