//! settlegate's pure rules. Nothing in this crate does I/O, reads a clock or
//! an environment variable: every input is an argument, so every rule is a
//! unit test away from being checked.
//!
//! - [`canonical`]: strict JSON and the canonical bytes that signatures cover.
//! - [`keys`]: Ed25519 key and signature encodings shared with Mathison.
//! - [`genome`]: the signed policy document and its trust decision.
//! - [`policy`]: the `settlement` policy inside it.
//! - [`seed`]: the seed middleware's `TEMPO_*` variables.
//! - [`credential`]: `Authorization` values and the canonical transaction hash.
//! - [`settlement`]: from a receipt, its block time and the policy to a verdict.
//! - [`signed_tx`]: a pull-mode credential's signed transaction, decoded
//!   and judged before it is broadcast.
//! - [`tx_sign`]: the payee's own secp256k1 key and the type-2
//!   transactions it signs.
//! - [`replay`]: the settlement a 200 carries, the replay record, its
//!   lifetime, and which later request is a retry of the consuming one.
//! - [`mpp`]: the Machine Payments Protocol `Payment` scheme: challenges,
//!   credentials, the attribution memo and the receipt.
//! - [`proof`]: `proof` credentials of zero-priced routes: the EIP-712
//!   digests, the signer's recovery and the replay key of a challenge.
//! - [`b64url`]: base64url as the `Payment` scheme writes it, read strictly.
//! - [`secret_strength`]: which challenge secrets are refused.
//! - [`accept_payment`]: the `Accept-Payment` header: which `Payment`
//!   challenges a client takes, and in what order.
//! - [`session`]: the MPP `session` intent: vouchers, the escrow's ABI,
//!   the `open` transaction's judgement and per-channel accounting.
//! - [`sponsor`]: fee sponsorship: the client's hand-off, the fee-payer
//!   co-signature, the signed caps and the shared budget's ledger.
//! - [`refusal`]: a refusal of `/v1/authorize` sealed for a proxy that
//!   cannot pass it on (nginx `auth_request`), opened as it was.
//! - [`discovery`]: the priced routes of a policy, as discovery documents
//!   list them.
//! - [`authoring`]: building and signing genomes for the CLI.

pub mod accept_payment;
pub mod authoring;
pub mod b64url;
pub mod canonical;
pub mod credential;
pub mod discovery;
pub mod error;
pub mod genome;
pub mod keys;
pub mod mpp;
pub mod policy;
pub mod primitives;
pub mod proof;
pub mod refusal;
pub mod replay;
pub mod secret_strength;
pub mod seed;
pub mod session;
pub mod settlement;
pub mod signed_tx;
pub mod sponsor;
pub mod target;
pub mod tx_sign;

pub use error::GenomeError;

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod genome_tests;
#[cfg(test)]
mod settlement_tests;
#[cfg(test)]
mod signed_tx_tests;
