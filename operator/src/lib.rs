//! The mapchaos operator: observes MapChaos resources and their pods, plans
//! (purely) which storms should run, and acts through the signed storm API.
//!
//! The pipeline: `selector` and `choice` (which pods, seeded) feed `plan`
//! (the pure decision); `storm_client` (signed with `signing_key`) carries
//! out its storm actions.

pub mod choice;
pub mod error;
pub mod plan;
pub mod selector;
pub mod signing_key;
pub mod storm_client;

pub use error::Error;
