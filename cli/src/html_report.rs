//! Writing HTML reports (`--report FILE.html`): the path is checked before
//! any work starts, so a typo never costs a storm, and the page is written
//! whole or not at all.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::Context as _;
use mapchaos_storm::html::{Page, render};

/// Whether `path` can be written: its directory exists and accepts a file
/// there. A file created only to find out is removed again.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a directory; give a file name such as report.html".into());
    }
    let existed = path.exists();
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|error| format!("cannot be written: {error}"))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Renders `page` and writes it to `path` (via a temporary file beside it,
/// so a reader never sees half a page).
pub fn write(path: &Path, page: &Page<'_>) -> anyhow::Result<()> {
    let html = render(page);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, html).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
