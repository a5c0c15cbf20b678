//! Behaviour every BookStore service shares, so no service re-implements it:
//! how a service is served over HTTP ([`http`]), how errors look on the wire
//! ([`error`], and [`json_errors`] for the errors axum and its layers answer), what it measures ([`metrics`], and [`process`] for the CPU and memory the kernel counts), how it calls its peers
//! ([`peer`]), where its peers are ([`cluster`]), the wire types of the public
//! and internal APIs ([`api`]), the members' command lines and the coordinator's wiring ([`plan`]), the initial inventory ([`inventory`]) and the
//! shared peer token ([`token`]).

pub mod api;
pub mod cluster;
pub mod error;
pub mod http;
pub mod inventory;
pub mod json_errors;
pub mod metrics;
pub mod params;
pub mod peer;
pub mod plan;
pub mod process;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod token;

pub use error::ApiError;
