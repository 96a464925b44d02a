//! The types mapchaos components share, without I/O: the MapChaos resource
//! (spec, status, CRD), the storm protocol, race and anomaly kinds and the
//! checker's report.

pub mod audit;
pub mod budget;
pub mod bytesize;
pub mod duration;
pub mod probe;
pub mod report;
pub mod resource;
pub mod schedule;
pub mod signing;
pub mod spec;
pub mod storm;
pub mod timeline;
pub mod validate;

pub use bytesize::ByteSize;
pub use duration::GoDuration;
pub use resource::MapChaosStatus;
pub use spec::{MapChaos, MapChaosSpec};

pub use report::{
    AnomalyKind, CheckReport, ExposureKind, KeyVerdictCounts, LinearizablePrefix, OpName, Verdict,
    Witness, WitnessOp,
};
