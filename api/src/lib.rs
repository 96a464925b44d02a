//! The types mapchaos components share, without I/O: race and anomaly kinds
//! and the checker's report, serialisable for the storm protocol and the
//! MapChaos status.

pub mod duration;
pub mod report;
pub mod signing;
pub mod spec;
pub mod storm;
pub mod validate;

pub use duration::GoDuration;

pub use report::{
    AnomalyKind, CheckReport, ExposureKind, KeyVerdictCounts, LinearizablePrefix, OpName, Verdict,
    Witness, WitnessOp,
};
