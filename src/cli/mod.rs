//! The command line: `serve` and the genome tooling of the seed's production
//! guide (`genome keygen | init | sign | verify | inspect`).

pub mod admin;
pub mod channels;
pub mod genome;
pub mod ledger;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "settlegate",
    version,
    about = "Decides whether an HTTP request was paid for on Tempo",
    long_about = "Decides whether an HTTP request was paid for on Tempo: other services (or a reverse \
proxy's forward-auth) ask it, and it answers 200 (paid, consumed once), 402 (not paid, with a challenge) \
or 503 (no trustworthy answer now). It serves only with a signed policy, the genome.",
    after_help = "Examples:
  settlegate genome keygen prod-key-001 --private-key-out prod.secret > prod-key.json
  settlegate genome init --signer prod-key.json --recipient 0x… --amount 1000000 --out unsigned.json
  settlegate genome sign unsigned.json genome.json --key-file prod.secret
  SETTLEGATE_GENOME__PATH=genome.json SETTLEGATE_TRUST__KEYS_FILE=prod-key.json settlegate serve

A local demo of the whole flow: scripts/demo (README.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Verify the genome, then serve the HTTP API.
    #[command(
        after_help = "Configuration comes from the defaults, then --config, then SETTLEGATE_* \
variables (section__key, e.g. SETTLEGATE_RPC__URLS); README.md lists every key.

Example:
  SETTLEGATE_GENOME__PATH=genome.json SETTLEGATE_TRUST__KEYS_FILE=prod-key.json \\
  SETTLEGATE_RPC__URLS=https://rpc.moderato.tempo.xyz SETTLEGATE_REDIS__URL=redis://127.0.0.1:6379 \\
    settlegate serve --config settlegate.toml"
    )]
    Serve(ServeArgs),
    /// Create, sign, verify and inspect genomes.
    #[command(
        subcommand,
        after_help = "Example (a key, a policy, a signature, a check):
  settlegate genome keygen prod-key-001 --private-key-out prod.secret > prod-key.json
  settlegate genome init --signer prod-key.json --recipient 0x… --amount 1000000 --out unsigned.json
  settlegate genome sign unsigned.json genome.json --key-file prod.secret
  settlegate genome verify genome.json --trusted-keys-file prod-key.json"
    )]
    Genome(Box<GenomeCommand>),
    /// List the payment channels (MPP sessions) in the store: accepted,
    /// spent, settled on chain, unsettled; with --settle, settle them now.
    #[command(
        after_help = "One JSON line per channel, then a summary line. Configuration as for serve \
(the store, rpc.urls, and for --settle session.settler_key_file).

Example:
  SETTLEGATE_REDIS__URL=redis://127.0.0.1:6379 SETTLEGATE_RPC__URLS=http://127.0.0.1:8545 settlegate channels
  SETTLEGATE_SESSION__SETTLER_KEY_FILE=/run/secrets/payee.key settlegate channels --settle"
    )]
    Channels(ChannelsArgs),
    /// The operator's books in PostgreSQL: create or upgrade the schema,
    /// read it, list and requeue webhook deliveries.
    #[command(
        after_help = "Configuration as for serve (ledger.database_url or ledger.database_url_file).

Examples:
  SETTLEGATE_LEDGER__DATABASE_URL=postgres://settlegate@127.0.0.1/settlegate settlegate ledger migrate
  settlegate ledger status --config settlegate.toml
  settlegate ledger webhooks --state dead --config settlegate.toml
  settlegate ledger payments --route 'GET /reports/*' --from 2026-01-01T00:00:00Z --limit 50
  settlegate ledger revenue --by day --from 2026-01-01T00:00:00Z
  settlegate ledger deny 0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266 --reason 'chargeback'"
    )]
    Ledger(LedgerArgs),
    /// The admin API's tooling: mint a bearer token.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the OpenAPI 3.1 document of the HTTP API (the one served at /openapi.json).
    #[command(after_help = "Example (regenerate the checked-in copy after changing the API):
  settlegate openapi > openapi.json")]
    Openapi,
}

#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// A TOML file layered over the defaults (environment variables win over it).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Create the ledger's tables, or upgrade them to this build's schema
    /// (never done by `serve`). Idempotent; prints the versions applied.
    Migrate,
    /// Whether the database's schema is this build's (exit code 1 if not).
    Status,
    /// Re-read each booked charge's receipt from the chain (rpc.urls) and
    /// report the rows that no longer match: a receipt gone, reverted, in
    /// another block, or without the booked transfer. Changes nothing.
    #[command(
        after_help = "One JSON line per row that does not match, then a summary line. Exit code 0: \
every row matches; 3: some do not; 1: a row could not be checked (the chain or the database did not answer).

Example:
  settlegate ledger reconcile --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z"
    )]
    Reconcile {
        /// Rows consumed at or after this instant (RFC 3339; default: 24 hours ago).
        #[arg(long)]
        from: Option<String>,
        /// Rows consumed before this instant (RFC 3339; default: now).
        #[arg(long)]
        to: Option<String>,
    },
    /// List webhook deliveries (one JSON line each, oldest first), or
    /// requeue dead ones.
    #[command(after_help = "Examples:
  settlegate ledger webhooks --state dead
  settlegate ledger webhooks --state pending --limit 20
  settlegate ledger webhooks requeue 42
  settlegate ledger webhooks requeue msg_1f0c3a5e9b2d4c6e8a0b1c2d3e4f5a6b
  settlegate ledger webhooks requeue --all-dead")]
    Webhooks(WebhooksArgs),
    /// The payments, newest first: one JSON line each, then a summary line
    /// with `next_cursor` (pass it as --cursor, with the same filters).
    Payments(PaymentsArgs),
    /// Revenue per route, payer or day and per asset: one JSON line per
    /// group, then the totals per asset.
    Revenue(RevenueArgs),
    /// The payer deny list: one JSON line per payer, then a count.
    Denials,
    /// Denies a payer (every instance refuses it within
    /// admin.deny_refresh_seconds): `payer_denied`, nothing consumed.
    Deny(DenyArgs),
    /// Takes a payer off the deny list.
    Allow(AllowArgs),
}

/// Which payments (every flag optional).
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// The genome's price rule, as the books spell it ("GET /reports/*", "default").
    #[arg(long)]
    pub route: Option<String>,
    /// 0x and 40 hex digits.
    #[arg(long)]
    pub payer: Option<String>,
    /// tempo or payment.
    #[arg(long)]
    pub scheme: Option<String>,
    /// charge or proof.
    #[arg(long)]
    pub kind: Option<String>,
    /// RFC 3339: consumed at or after.
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339: consumed before.
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Args, Debug)]
pub struct PaymentsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// 1 to 500 [default: 100].
    #[arg(long)]
    pub limit: Option<String>,
    /// The previous page's next_cursor.
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Args, Debug)]
pub struct RevenueArgs {
    /// route, payer or day (UTC).
    #[arg(long)]
    pub by: String,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct DenyArgs {
    /// 0x and 40 hex digits.
    pub payer: String,
    /// Why (at most 256 characters; for the operators only).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct AllowArgs {
    /// 0x and 40 hex digits.
    pub payer: String,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Mint a random admin token: the token (shown once) and its digest,
    /// as one JSON line on stdout. Configure only the digest
    /// (admin.token_digests); give the token to the caller.
    #[command(after_help = "Example:
  settlegate admin token > admin-token.json   # {\"token\": \"sga_…\", \"digest\": \"sha256:…\"}")]
    Token,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WebhooksArgs {
    /// Only the deliveries in this state.
    #[arg(long, value_enum)]
    pub state: Option<DeliveryState>,
    /// Deliveries listed at most.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
    /// Only the deliveries with an id above this one (the next page).
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    #[command(subcommand)]
    pub command: Option<WebhooksCommand>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Send a dead delivery again: back to pending, due now, its attempts
    /// and age limit counted afresh. Prints the ids requeued.
    #[command(
        after_help = "Examples (the id or webhook-id from `settlegate ledger webhooks --state dead`):
  settlegate ledger webhooks requeue 42
  settlegate ledger webhooks requeue --all-dead"
    )]
    Requeue(RequeueArgs),
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("which").required(true))]
pub struct RequeueArgs {
    /// The delivery's id, or its webhook-id (msg_…).
    #[arg(group = "which")]
    pub id: Option<String>,
    /// Every dead delivery.
    #[arg(long, group = "which")]
    pub all_dead: bool,
}

#[derive(Args, Debug)]
pub struct ChannelsArgs {
    /// A TOML file layered over the defaults (environment variables win over it).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// Settle every unsettled channel now with the payee's key.
    #[arg(long)]
    pub settle: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file layered over the defaults (environment variables win over it).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum GenomeCommand {
    /// Generate an Ed25519 key pair: public key JSON on stdout, private key
    /// to a new 0600 file (--private-key-out) or else to stderr.
    #[command(after_help = "Example:
  settlegate genome keygen prod-key-001 --private-key-out prod.secret > prod-key.json")]
    Keygen(KeygenArgs),
    /// Build an unsigned genome from flags or the seed's TEMPO_* variables.
    #[command(after_help = "Example:
  settlegate genome init --signer prod-key.json --recipient 0x70997970c51812dc3a010c7d01b50e0d17dc79c8 \\
    --amount 1000000 --out unsigned.json")]
    Init(InitArgs),
    /// Add a signature (private key from --key-file or GENOME_SIGNING_PRIVATE_KEY).
    #[command(after_help = "Example:
  settlegate genome sign unsigned.json genome.json --key-file prod.secret")]
    Sign(SignArgs),
    /// Verify against the pinned keys; prints the id and each signer's verdict.
    #[command(after_help = "Example:
  settlegate genome verify genome.json --trusted-keys-file prod-key.json")]
    Verify(VerifyArgs),
    /// Print a genome's contents without trusting it.
    #[command(after_help = "Example:
  settlegate genome inspect genome.json")]
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The key id to put in `authority.signers`, e.g. production-key-001.
    pub key_id: String,
    /// Write the private key (base64 PKCS#8) to this new file, mode 0600.
    #[arg(long)]
    pub private_key_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Public key JSON printed by `genome keygen` (repeat for several signers).
    #[arg(long = "signer", required = true)]
    pub signers: Vec<PathBuf>,
    #[arg(long, default_value = "SETTLEGATE")]
    pub name: String,
    #[arg(long, default_value = "1.0.0")]
    pub version: String,
    /// Distinct signatures required.
    #[arg(long, default_value_t = 1)]
    pub threshold: u32,
    #[arg(long, default_value_t = 42431)]
    pub chain_id: u64,
    #[arg(long, default_value = "Tempo API")]
    pub realm: String,
    /// Recipient address [default: TEMPO_RECIPIENT].
    #[arg(long)]
    pub recipient: Option<String>,
    /// Price in atomic units [default: TEMPO_AMOUNT].
    #[arg(long)]
    pub amount: Option<String>,
    /// Token address [default: TEMPO_TOKEN, else AlphaUSD].
    #[arg(long)]
    pub token: Option<String>,
    /// Maximum payment age in seconds [default: TEMPO_ALLOWED_AGE_SECONDS, else 300].
    #[arg(long)]
    pub max_age_seconds: Option<u64>,
    /// RFC 3339 time before which the genome is not valid.
    #[arg(long)]
    pub not_before: Option<String>,
    /// RFC 3339 time at which the genome expires.
    #[arg(long, conflicts_with = "valid_for_days")]
    pub expires_at: Option<String>,
    /// Expire this many days from now.
    #[arg(long)]
    pub valid_for_days: Option<u32>,
    /// Write to this new file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allow --out to replace an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The genome to sign.
    pub input: PathBuf,
    /// Where to write the signed genome [default: stdout].
    pub output: Option<PathBuf>,
    /// Key id to sign as [default: the signer whose public key matches].
    #[arg(value_name = "KEY_ID")]
    pub key_id_positional: Option<String>,
    #[arg(long, conflicts_with = "key_id_positional")]
    pub key_id: Option<String>,
    /// File holding the base64 PKCS#8 private key [default: GENOME_SIGNING_PRIVATE_KEY].
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Replace the input file with the signed genome.
    #[arg(long, conflicts_with = "output")]
    pub in_place: bool,
    /// Allow OUTPUT to replace an existing file (never the input: see --in-place).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    pub path: PathBuf,
    /// Configuration file to take the pinned keys from (as `serve` does).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A pinned public key (base64 SPKI); replaces the configured keys.
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<String>,
    /// A file of pinned keys; replaces the configured keys.
    #[arg(long)]
    pub trusted_keys_file: Option<PathBuf>,
    /// Minimum distinct pinned signers, with --trusted-key(s-file).
    #[arg(long, default_value_t = 1)]
    pub min_threshold: u32,
    /// Root for build_manifest paths [default: the genome's directory].
    #[arg(long)]
    pub manifest_root: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub path: PathBuf,
}
