//! settlegate: decides whether an HTTP request was paid for on Tempo.
//!
//! Layout (see README.md): pure rules live in the `settlegate-rules` crate,
//! the actors that do I/O in `settlegate-actors`, and this crate holds the
//! HTTP surface ([`http`]), the boot sequence ([`startup`]), configuration
//! ([`settings`]), telemetry, metrics and the command line ([`cli`]).

pub mod cli;
pub mod code;
pub mod http;
#[cfg(test)]
mod import_graph;
pub mod memory;
pub mod outcome;
pub mod send_timeout;
pub mod session;
pub mod settings;
pub mod settle;
pub mod sponsor;
pub mod startup;
pub mod telemetry;
pub mod tls;

pub use startup::{Application, BootError};
