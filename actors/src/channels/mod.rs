//! Payment channels (MPP `session`): their state, shared by every instance
//! through the store ([`book`]), and the settler that turns accepted
//! vouchers into tokens on chain ([`settler`], deciding with [`plan`]).

pub mod book;
pub mod plan;
pub mod settler;

pub use book::{BookError, CLOSING_KEY, ChannelBook, Step, channel_key, parse_channel_key};
pub use settler::{ChannelRow, ChannelSettler, Scan, ScanReport, SettleError, SettlerConfig, SettlerMetrics};
