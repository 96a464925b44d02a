//! The crate's one error type.

/// Everything that can go wrong in `mapchaos-storm`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A history breaks one of the rules the checker relies on.
    #[error("invalid history: {0}")]
    InvalidHistory(String),
    /// A history file is not valid JSON of the expected shape.
    #[error("history JSON: {0}")]
    HistoryJson(#[from] serde_json::Error),
}

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidHistory(_) => "invalid_history",
            Error::HistoryJson(_) => "history_json",
        }
    }
}
