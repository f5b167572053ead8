//! settlegate's actors: the parts that do I/O, each owning one resource.
//!
//! - [`genome_supervisor::GenomeSupervisor`]: verifies the genome before boot,
//!   re-verifies it on SIGHUP and on an interval, and swaps it atomically.
//!
//! They run on the actix system of the binary; the HTTP handlers reach them
//! through their `Addr` or, for the genome, a lock-free shared view.

pub mod genome_supervisor;

pub use genome_supervisor::{
    ActiveGenome, GenomeSource, GenomeSupervisor, Reload, ReloadCause, ReloadOutcome,
};
