//! What leaves the agent: Prometheus metrics and the read-only HTTP API.

pub mod http;
pub mod metrics;
pub mod server;
