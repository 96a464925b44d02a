//! The engine's clock: milliseconds since the Unix epoch for TTLs, and a manual
//! clock that tests move by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Millis;

/// Where "now" comes from. Redis measures expiry on the wall clock
/// (`EXPIREAT` takes Unix time), so the system clock does too.
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start` milliseconds.
    pub fn manual(start: Millis) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start)))
    }

    /// Milliseconds since the Unix epoch (or the manual clock's reading).
    pub fn now(&self) -> Millis {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or(0),
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Move a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Millis) {
        if let Clock::Manual(now) = self {
            now.fetch_add(by, Ordering::SeqCst);
        }
    }
}
