//! The mapchaos operator: observes MapChaos resources and their pods, plans
//! (purely) which storms should run, and acts through the signed storm API.
//!
//! The pipeline: `selector` and `choice` (which pods, seeded) feed `plan`
//! (the pure decision); `storm_client` (signed with `signing_key`) carries
//! out its storm actions. `observe` feeds the planner from the cluster and
//! the sidecars, `act` carries its plan out, and `controller` runs the loop
//! (with `kill_switch`, `leader` and `metrics` around it). `webhook` injects
//! the sidecar into the pods that ask for it; `admission` decides who may
//! storm where and stamps who did, with the rules of `policy`, which the
//! planner applies again whenever a run starts. `probes` decides which
//! steady-state probes are due and what their attempts mean for a run;
//! `probe_client` makes their calls. `reports` decides which storm reports
//! to keep in Secrets and which to prune; `report_store` fetches and writes
//! them.

pub mod act;
pub mod admission;
pub mod choice;
pub mod config;
pub mod controller;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod kill_switch;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod probe_client;
pub mod probes;
pub mod release;
pub mod report_store;
pub mod reports;
pub mod selector;
pub mod signing_key;
pub mod storm_client;
pub mod webhook;

pub use config::Config;
pub use error::Error;
