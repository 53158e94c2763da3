//! Ways out of the view: the CLI's table and JSON (`render`); later Prometheus metrics and the HTTP API.

pub mod http;
pub mod metrics;
pub mod render;
pub mod tls_listener;
