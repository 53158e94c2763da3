//! Ways out of the view: the CLI's table and JSON (`render`), Prometheus metrics, the HTTP API (`http`) and the
//! server that holds its connections (`server`).

pub mod http;
pub mod metrics;
pub mod render;
pub mod server;
