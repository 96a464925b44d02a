//! One anomalous key's timeline as SVG: a lane per client, each operation a
//! bar from call to return labelled with command and result, the culprit
//! highlighted, the longest legal prefix marked, SCAN windows and the key's
//! certain presence drawn, and a tooltip per bar. The page's script re-lays
//! the same elements out on zoom (see `page.js`), from their data attributes.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use mapchaos_api::timeline::{KeyTimeline, OpRole, Presence, TimelineOp};
use mapchaos_api::{OpName, Witness};

use super::svg::{esc, micros};
use crate::app_traffic::APP_CLIENT_BASE;

const W: f64 = 920.0;
const LEFT: f64 = 118.0;
const RIGHT: f64 = 12.0;
const AXIS: f64 = 26.0;
const LANE: f64 = 38.0;
const BAR: f64 = 30.0;
/// The height of a presence span (a thinner bar: it is not an operation).
const SPAN: f64 = 18.0;
/// Approximate width of one label character at the page's 11px font.
const CHAR: f64 = 6.3;

/// The lane name of a client.
pub(crate) fn lane_name(client: u32) -> String {
    match client {
        0 => "preparer".to_owned(),
        c if c >= APP_CLIENT_BASE => format!("app client {}", c - APP_CLIENT_BASE + 1),
        c => format!("worker {c}"),
    }
}

/// A bar's two label lines: the command (or just its name when short of
/// room) and what it returned.
fn label(op: &TimelineOp) -> (String, String, String) {
    let name = op.op.op.to_string();
    let command = match &op.op.argument {
        Some(arg) => format!("{name} {arg}"),
        None => name.clone(),
    };
    let result = match &op.op.result {
        // "N keys, this key (not) included" is the tooltip's; the bar says
        // what matters.
        Some(result) if op.op.op == OpName::Scan => {
            if result.ends_with("not included") {
                "→ key not returned".to_owned()
            } else {
                "→ key returned".to_owned()
            }
        }
        Some(result) => format!("→ {result}"),
        None => "→ ? (no reply)".to_owned(),
    };
    (command, name, result)
}

fn when(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn tip(op: &TimelineOp) -> String {
    let (command, _, result) = label(op);
    let mut tip = format!(
        "{} · {command} {result}\ncall {}",
        lane_name(op.op.client),
        when(op.op.call_us)
    );
    match op.op.ret_us {
        Some(ret) => {
            let _ = write!(
                tip,
                " · return {} (took {})",
                when(ret),
                micros(ret.saturating_sub(op.op.call_us))
            );
        }
        None => tip
            .push_str(" · never returned (error or timeout): it may or may not have taken effect"),
    }
    let _ = write!(tip, "\nvalue before: {} · after: {}", op.before, op.after);
    tip.push('\n');
    tip.push_str(match op.role {
        OpRole::Culprit => "the operation that cannot be explained",
        OpRole::Witness => "one of the witness's operations",
        OpRole::Context => "another operation of this key, for context",
    });
    if op.in_prefix {
        tip.push_str("\nplaced in the longest legal prefix");
    }
    tip
}

/// The timeline a witness carries, or one made of its operations alone (a
/// report from before witnesses carried timelines).
pub(crate) fn of(witness: &Witness) -> KeyTimeline {
    witness.timeline.clone().unwrap_or_else(|| KeyTimeline {
        ops: witness
            .operations
            .iter()
            .map(|op| TimelineOp {
                op: op.clone(),
                role: OpRole::Witness,
                in_prefix: false,
                before: "unknown".into(),
                after: "unknown".into(),
            })
            .collect(),
        omitted: 0,
        presence: Vec::new(),
    })
}

/// The SVG of one timeline; `id` makes its element ids unique on the page.
pub(crate) fn svg(id: &str, timeline: &KeyTimeline) -> String {
    let ops = &timeline.ops;
    let mut lanes: Vec<u32> = ops
        .iter()
        .map(|o| o.op.client)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Workers first, then application clients, then the preparer.
    lanes.sort_by_key(|&c| (c == 0, c));
    let presence_lane = !timeline.presence.is_empty();
    // Two presence lanes, present above absent: in an anomalous history
    // the two can overlap, and that overlap is the contradiction.
    let lane_count = lanes.len() + 2 * usize::from(presence_lane);
    let height = AXIS + lane_count as f64 * LANE + 8.0;
    // Event order, not real time: every distinct call or return instant
    // gets one step, so a 3 µs operation next to a 90 ms gap stays visible.
    let order = Order::new(ops);
    let (a0, a1) = (-0.6, order.end() - 0.4);
    // The first view frames the witness's own operations; the context
    // around them is a zoom-out (or the "all" button) away.
    let involved = ops.iter().filter(|o| o.role != OpRole::Context);
    let lo = involved
        .clone()
        .map(|o| order.pos(o.op.call_us))
        .fold(f64::INFINITY, f64::min);
    let hi = involved
        .map(|o| o.op.ret_us.map_or(a1, |r| order.bar_end(o.op.call_us, r)))
        .fold(f64::NEG_INFINITY, f64::max);
    let (v0, v1) = if lo.is_finite() && hi.is_finite() {
        ((lo - 0.6).max(a0), (hi + 0.6).min(a1))
    } else {
        (a0, a1)
    };
    let plot_w = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t - v0) / (v1 - v0) * plot_w;
    let lane_top =
        |client: u32| AXIS + lanes.iter().position(|&c| c == client).unwrap_or(0) as f64 * LANE;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="timeline" id="{id}" viewBox="0 0 {W} {height}" width="{W}" height="{height}" data-t0="{v0}" data-t1="{v1}" data-a0="{a0}" data-a1="{a1}" data-x0="{LEFT}" data-w="{plot_w}" data-lanes="{}" data-ops="{}">"#,
        lanes.len(),
        ops.len()
    );
    let _ = write!(
        out,
        r#"<defs><clipPath id="{id}-clip"><rect x="{LEFT}" y="0" width="{plot_w}" height="{height}"/></clipPath><pattern id="{id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" class="hatch"/></pattern></defs>"#
    );
    for (i, &client) in lanes.iter().enumerate() {
        let top = AXIS + i as f64 * LANE;
        let _ = write!(
            out,
            r#"<g class="lane" data-client="{client}"><rect class="lane-bg{}" x="0" y="{top}" width="{W}" height="{LANE}"/><text class="lane-name" x="8" y="{:.1}">{}</text></g>"#,
            if i % 2 == 1 { " odd" } else { "" },
            top + LANE / 2.0 + 4.0,
            esc(&lane_name(client))
        );
    }
    if presence_lane {
        for (i, name) in ["key present", "key absent"].into_iter().enumerate() {
            let top = AXIS + (lanes.len() + i) as f64 * LANE;
            let _ = write!(
                out,
                r#"<g class="lane presence-lane"><rect class="lane-bg presence" x="0" y="{top}" width="{W}" height="{LANE}"/><text class="lane-name" x="8" y="{:.1}">{name}</text></g>"#,
                top + LANE / 2.0 + 4.0
            );
        }
    }
    // Axis ticks; the script redraws them on zoom.
    let _ = write!(
        out,
        r#"<g class="axis" data-top="{AXIS}" data-bottom="{height}">"#
    );
    out.push_str(&axis(&order, x, (LEFT, LEFT + plot_w)));
    out.push_str("</g>");
    let _ = write!(out, r#"<g clip-path="url(#{id}-clip)">"#);
    // SCAN windows across every lane: the span the SCAN's promise covers.
    for op in ops.iter().filter(|o| o.op.op == OpName::Scan) {
        let call = order.pos(op.op.call_us);
        let ret = op.op.ret_us.map_or(a1, |r| order.pos(r));
        let _ = write!(
            out,
            r#"<rect class="scan-window" data-call="{call}" data-ret="{ret}" x="{:.1}" y="{AXIS}" width="{:.1}" height="{:.1}"/>"#,
            x(call),
            (x(ret) - x(call)).max(1.0),
            lane_count as f64 * LANE
        );
    }
    if presence_lane {
        for span in &timeline.presence {
            let row = lanes.len() + usize::from(span.presence == Presence::Absent);
            let top = AXIS + row as f64 * LANE + (LANE - SPAN) / 2.0;
            let from = order.pos(span.from_us).max(a0);
            let to = span.to_us.map_or(a1, |t| order.pos(t).min(a1));
            let (class, word) = match span.presence {
                Presence::Present => ("present", "certainly present"),
                Presence::Absent => ("absent", "certainly absent"),
            };
            let until = span.to_us.map_or_else(|| "the end".to_owned(), when);
            let _ = write!(
                out,
                r#"<g class="span {class}" data-call="{from}" data-ret="{to}" data-tip="{}"><rect class="bar" x="{:.1}" y="{top}" width="{:.1}" height="{SPAN}"/><text class="label" x="{:.1}" y="{:.1}" data-full="{word}" data-short="">{word}</text></g>"#,
                esc(&format!(
                    "the key was {word} from {} until {until}, in every order that explains its operations",
                    when(span.from_us)
                )),
                x(from),
                (x(to) - x(from)).max(1.0),
                x(from).max(LEFT) + 4.0,
                top + 13.0,
            );
        }
    }
    for op in ops {
        let top = lane_top(op.op.client) + (LANE - BAR) / 2.0;
        let call = order.pos(op.op.call_us);
        let ret = op.op.ret_us.map_or(a1, |r| order.bar_end(op.op.call_us, r));
        let (full, short, result) = label(op);
        let role = match op.role {
            OpRole::Culprit => "role-culprit",
            OpRole::Witness => "role-witness",
            OpRole::Context => "role-context",
        };
        let x1 = x(call);
        let width = (x(ret) - x1).max(2.0);
        let fits = |text: &str| width >= text.chars().count() as f64 * CHAR + 6.0;
        let shown = if fits(&full) {
            full.as_str()
        } else if fits(&short) {
            short.as_str()
        } else {
            ""
        };
        let result_shown = if !shown.is_empty() && fits(&result) {
            result.as_str()
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<g class="op {role}{}{}" data-call="{}" data-ret="{}" data-tip="{}"><rect class="bar" x="{x1:.1}" y="{top:.1}" width="{width:.1}" height="{BAR}"{}/>"#,
            if op.op.ret_us.is_none() { " info" } else { "" },
            if op.in_prefix { " in-prefix" } else { "" },
            call,
            op.op.ret_us.map_or_else(String::new, |_| ret.to_string()),
            esc(&tip(op)),
            if op.op.ret_us.is_none() {
                format!(r#" fill="url(#{id}-hatch)""#)
            } else {
                String::new()
            },
        );
        if op.in_prefix {
            let _ = write!(
                out,
                r#"<rect class="prefix-mark" x="{x1:.1}" y="{:.1}" width="{width:.1}" height="3"/>"#,
                top + BAR + 1.0
            );
        }
        let _ = write!(
            out,
            r#"<text class="label" x="{:.1}" y="{:.1}" data-full="{}" data-short="{}">{}</text><text class="label" x="{0:.1}" y="{:.1}" data-full="{}" data-short="">{}</text></g>"#,
            x1.max(LEFT) + 4.0,
            top + 12.5,
            esc(&full),
            esc(&short),
            esc(shown),
            top + 25.0,
            esc(&result),
            esc(result_shown)
        );
    }
    out.push_str("</g></svg>");
    out
}

/// The instants of a timeline in order, each at a position: one step
/// after the previous, two when either belongs to one of the witness's own
/// operations, so those bars have room for their labels.
struct Order {
    times: Vec<u64>,
    positions: Vec<f64>,
}

impl Order {
    fn new(ops: &[TimelineOp]) -> Order {
        let instants = |o: &TimelineOp| [Some(o.op.call_us), o.op.ret_us].into_iter().flatten();
        let mut times: Vec<u64> = ops.iter().flat_map(instants).collect();
        times.sort_unstable();
        times.dedup();
        let mut wide: Vec<u64> = ops
            .iter()
            .filter(|o| o.role != OpRole::Context)
            .flat_map(instants)
            .collect();
        wide.sort_unstable();
        let mut positions = Vec::with_capacity(times.len());
        let mut at = 0.0;
        for (i, t) in times.iter().enumerate() {
            if i > 0 {
                let wider =
                    wide.binary_search(t).is_ok() || wide.binary_search(&times[i - 1]).is_ok();
                at += if wider { 2.0 } else { 1.0 };
            }
            positions.push(at);
        }
        Order { times, positions }
    }

    /// One step past the last position.
    fn end(&self) -> f64 {
        self.positions.last().map_or(0.0, |p| p + 1.0)
    }

    /// The position of `t`: its own when it is an instant of the timeline,
    /// else halfway between its neighbours (half a step outside the ends).
    fn pos(&self, t: u64) -> f64 {
        match self.times.binary_search(&t) {
            Ok(i) => self.positions[i],
            Err(0) => -0.5,
            Err(i) if i == self.times.len() => self.positions[i - 1] + 0.5,
            Err(i) => (self.positions[i - 1] + self.positions[i]) / 2.0,
        }
    }

    /// Where a bar from `call` to `ret` ends: at least most of a step
    /// after its start, so an operation shorter than the clock's
    /// resolution still shows.
    fn bar_end(&self, call: u64, ret: u64) -> f64 {
        self.pos(ret).max(self.pos(call) + 0.8)
    }
}

/// Minimum pixels between two axis labels.
const TICK_GAP: f64 = 64.0;

/// A tick per instant, labelled with its real time; labels closer than
/// [`TICK_GAP`] to the previous shown one are hidden (the script redoes
/// this on zoom).
fn axis(order: &Order, x: impl Fn(f64) -> f64, plot: (f64, f64)) -> String {
    let mut out = String::new();
    let mut last = f64::NEG_INFINITY;
    for (&t, &pos) in order.times.iter().zip(&order.positions) {
        let px = x(pos);
        let shown = px >= plot.0 && px <= plot.1 && px - last >= TICK_GAP;
        if shown {
            last = px;
        }
        let _ = write!(
            out,
            r#"<g class="tickmark{}" data-pos="{pos}"{}><line class="grid" x1="{px:.1}" x2="{px:.1}" y1="{AXIS}" y2="100%"/><text class="tick" x="{px:.1}" y="16" text-anchor="middle">{}</text></g>"#,
            if shown { "" } else { " thin" },
            if px < plot.0 || px > plot.1 {
                r#" style="display:none""#
            } else {
                ""
            },
            when(t)
        );
    }
    out
}
