//! settlegate's actors: the parts that do I/O, each owning one resource.
//!
//! - [`genome_supervisor::GenomeSupervisor`]: verifies the genome before boot,
//!   re-verifies it on SIGHUP and on an interval, and swaps it atomically.
//! - [`rpc_pool::RpcPool`]: the Tempo JSON-RPC endpoints, with health
//!   tracking, circuits and failover.
//! - [`coalescer::Coalescer`]: one in-flight lookup per transaction hash.
//! - [`replay_guard::ReplayGuard`]: claim, commit, release; Redis or a local file.
//!
//! They run on the actix system of the binary; the HTTP handlers reach them
//! through their `Addr` or, for the genome, a lock-free shared view.

pub mod coalescer;
pub mod genome_supervisor;
pub mod replay_guard;
pub mod rpc_pool;

pub use genome_supervisor::{ActiveGenome, GenomeSource, GenomeSupervisor, Reload, ReloadCause, ReloadOutcome};
