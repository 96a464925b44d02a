//! Drawing helpers for the HTML report: escaping, units, axis ticks and the
//! per-second line charts, as plain SVG text (no assets, no crate).

use std::fmt::Write as _;

/// Text safe inside HTML elements and quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration in microseconds, for people.
pub(crate) fn micros(value: u64) -> String {
    match value {
        0..1_000 => format!("{value} µs"),
        1_000..1_000_000 => format!("{:.2} ms", value as f64 / 1e3),
        _ => format!("{:.2} s", value as f64 / 1e6),
    }
}

/// A count with thin thousands separators.
pub(crate) fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// About `n` round tick values covering `[lo, hi]`.
pub(crate) fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// A short label for an axis value.
pub(crate) fn short(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if abs >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else if abs >= 10.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// One line of a chart.
pub(crate) struct Line<'a> {
    pub(crate) name: &'a str,
    pub(crate) color: &'a str,
    pub(crate) values: Vec<f64>,
    /// Drawn dashed (a second statistic of the same series, e.g. p99).
    pub(crate) dashed: bool,
}

/// A vertical marker on a chart (the storm's end, an abort).
pub(crate) struct Marker {
    pub(crate) at_seconds: f64,
    pub(crate) label: String,
}

const CHART_W: f64 = 920.0;
const CHART_H: f64 = 210.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// How a chart maps its buckets and values.
#[derive(Clone, Copy)]
pub(crate) struct Scale {
    /// The width of one bucket.
    pub(crate) bucket_seconds: f64,
    /// How long the workers ran (the shaded storm window).
    pub(crate) window_seconds: f64,
    /// How values are written on the axis and in tooltips.
    pub(crate) format: fn(f64) -> String,
    /// A log value axis (latency) instead of a linear one from zero.
    pub(crate) log: bool,
}

/// A line chart over the storm's buckets, with a hover column per bucket
/// whose tooltip lists every line's value there.
pub(crate) fn line_chart(
    id: &str,
    unit: &str,
    scale: &Scale,
    lines: &[Line<'_>],
    markers: &[Marker],
) -> String {
    let Scale {
        bucket_seconds,
        window_seconds,
        format,
        log,
    } = *scale;
    let buckets = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let span = (buckets as f64 * bucket_seconds)
        .max(window_seconds)
        .max(1e-3);
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .fold(0.0f64, f64::max);
    let top = if max <= 0.0 { 1.0 } else { max * 1.1 };
    // A log axis spans whole powers of ten around the positive values.
    let min_positive = lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let (log_lo, log_hi) = if min_positive.is_finite() {
        (
            min_positive.log10().floor(),
            max.log10().ceil().max(min_positive.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let plot_w = CHART_W - LEFT - RIGHT;
    let plot_h = CHART_H - TOP - BOTTOM;
    let x = |s: f64| LEFT + s / span * plot_w;
    let y = |v: f64| {
        if log {
            let l = v.max(10f64.powf(log_lo)).log10();
            TOP + plot_h - (l - log_lo) / (log_hi - log_lo) * plot_h
        } else {
            TOP + plot_h - v / top * plot_h
        }
    };
    let y_ticks: Vec<f64> = if log {
        (log_lo as i32..=log_hi as i32)
            .map(|e| 10f64.powi(e))
            .collect()
    } else {
        ticks(0.0, top, 4)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{}">"#,
        esc(unit)
    );
    // The storm window: when the workers ran.
    let _ = write!(
        svg,
        r#"<rect class="window" x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_h}"><title>storm window: the workers ran</title></rect>"#,
        x(0.0),
        x(window_seconds) - x(0.0)
    );
    for t in y_ticks {
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT + plot_w,
            LEFT - 6.0,
            y(t) + 4.0,
            esc(&format(t)),
            y = y(t)
        );
    }
    for t in ticks(0.0, span, 10) {
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}s</text>"#,
            x(t),
            CHART_H - 10.0,
            short(t)
        );
    }
    for line in lines {
        // On a log axis a bucket without a value (the op did not run)
        // breaks the line instead of diving to the floor.
        let mut segments: Vec<String> = vec![String::new()];
        for (i, v) in line.values.iter().enumerate() {
            if log && *v <= 0.0 {
                segments.push(String::new());
                continue;
            }
            let last = segments.last_mut().expect("one segment at least");
            let _ = write!(
                last,
                "{:.1},{:.1} ",
                x((i as f64 + 0.5) * bucket_seconds),
                y(*v)
            );
        }
        for points in segments.iter().filter(|p| !p.is_empty()) {
            let _ = write!(
                svg,
                r#"<polyline class="line{}" stroke="{}" points="{}"/>"#,
                if line.dashed { " dashed" } else { "" },
                line.color,
                points.trim_end()
            );
        }
    }
    for marker in markers {
        let _ = write!(
            svg,
            r#"<g class="marker" data-tip="{label}"><line x1="{mx:.1}" x2="{mx:.1}" y1="{TOP}" y2="{:.1}"/><text x="{:.1}" y="{:.1}">{label}</text></g>"#,
            TOP + plot_h,
            x(marker.at_seconds) - 4.0,
            TOP + 10.0,
            mx = x(marker.at_seconds),
            label = esc(&marker.label)
        );
    }
    // Hover columns, one per bucket.
    let column = plot_w * bucket_seconds / span;
    for i in 0..buckets {
        let mut tip = format!(
            "{:.0}–{:.0} s",
            i as f64 * bucket_seconds,
            (i + 1) as f64 * bucket_seconds
        );
        for line in lines {
            if let Some(v) = line.values.get(i) {
                let _ = write!(tip, "\n{}: {}", line.name, format(*v));
            }
        }
        let _ = write!(
            svg,
            r#"<rect class="hover" x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" data-tip="{}"/>"#,
            x(i as f64 * bucket_seconds),
            column.max(1.0),
            esc(&tip)
        );
    }
    svg.push_str("</svg>");
    let mut legend = String::from(r#"<div class="legend">"#);
    for line in lines {
        let _ = write!(
            legend,
            r#"<span><i class="swatch{}" style="border-color:{}"></i>{}</span>"#,
            if line.dashed { " dashed" } else { "" },
            line.color,
            esc(line.name)
        );
    }
    legend.push_str(r#"<span><i class="swatch window"></i>storm window</span></div>"#);
    svg + &legend
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            esc(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 1234.0, 4);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.len() >= 3 && t.len() <= 8, "{t:?}");
        assert_eq!(count(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(micros(1_500), "1.50 ms");
    }
}
