//! What leaves the agent: Prometheus metrics and the read-only HTTP API.

mod buffers;
pub mod http;
pub mod metrics;
pub mod server;
