//! A finished storm's HTML report as the sidecar serves it: the same page
//! `mapchaos run --report` writes, titled with the storm's id and showing
//! the request it ran; a reader with a size limit may ask for fewer
//! timelines, and the page says it was trimmed.

use mapchaos_api::storm::{StormReport, StormRequest};
use mapchaos_storm::html::{Page, Trim, render as render_page};

/// The page of storm `id`; `max_timelines` trims it.
pub fn render(
    id: &str,
    report: &StormReport,
    request: &StormRequest,
    max_timelines: Option<usize>,
) -> String {
    let mut page = Page::storm(format!("storm {id}"), report);
    page.facts.push(("storm id".into(), id.to_owned()));
    page.spec = serde_json::to_string_pretty(request).ok();
    page.trim = max_timelines.map(|max_timelines| Trim {
        max_timelines,
        why: "to fit a Kubernetes Secret".into(),
    });
    render_page(&page)
}
