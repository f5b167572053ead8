//! Payment channels (MPP `session`): their state, shared by every instance
//! through the store ([`book`]), and the settler that turns accepted
//! vouchers into tokens on chain ([`settler`], deciding with [`plan`]).

pub mod book;
pub mod plan;
pub mod settler;

pub use book::{BookError, CLOSING_KEY, ChannelBook, Step, channel_key, parse_channel_key};
pub use settler::{ChannelRow, ChannelSettler, Scan, ScanReport, SettleError, SettlerConfig, SettlerMetrics};

use std::time::Duration;

use actix::Addr;
use alloy_primitives::Address;
use settlegate_rules::session::abi::{decode_get_channel, get_channel_call};
use settlegate_rules::session::{ChannelId, OnChain};

use crate::rpc_pool::{EthCall, RpcError, RpcPool, ask};

/// A channel's `getChannel` on the escrow at `escrow`, through the pool
/// (waiting at most `wait`); an answer that does not decode is `Malformed`.
pub async fn read_channel(
    rpc: &Addr<RpcPool>,
    chain_id: u64,
    escrow: Address,
    channel: &ChannelId,
    wait: Duration,
) -> Result<OnChain, RpcError> {
    let call = EthCall {
        to: escrow,
        data: get_channel_call(channel),
        chain_id,
    };
    let data = ask(rpc, call, wait).await?;
    decode_get_channel(&data).map_err(|e| RpcError::Malformed(format!("getChannel: {e}")))
}
