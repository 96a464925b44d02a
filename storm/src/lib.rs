//! The mapchaos judge: the history a storm records and the race checker that
//! decides whether a correct map could have produced it (see CHECKER.md).

pub mod app_traffic;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod error;
pub mod glob;
pub mod history;
pub mod html;
pub mod monitor;
pub mod report;
mod resp_restore;
pub mod restore;
pub mod runner;
pub mod series;
pub mod verdict;
pub mod workload;

pub use checker::{CheckOptions, check};
pub use error::Error;
pub use history::{ClientId, Event, History, KeyId, Op, RecordBudget, Recorder, ValueId};
