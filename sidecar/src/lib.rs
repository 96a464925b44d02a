//! The mapchaos sidecar: a concurrent in-memory map service that speaks the
//! Redis protocol (RESP2) to the application and to storms, and serves
//! health and Prometheus metrics over HTTP.

pub mod app_probe;
pub mod audit;
mod commands;
pub mod config;
pub mod control_api;
pub mod cross_protocol;
pub mod engine;
pub mod fd_budget;
mod finished;
pub mod http;
pub mod http_listener;
pub mod memory;
pub mod memory_limit;
pub mod metrics;
pub mod report_page;
pub mod resp;
pub mod server;
pub mod service;
pub mod signature;
pub mod storm_target;
pub mod storms;

pub use config::SidecarArgs;
pub use service::run;
