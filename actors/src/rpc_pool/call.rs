//! Calls for sessions: `eth_call` at the latest block ([`EthCall`]) and
//! the parameters of a transaction the payee signs ([`PrepareTx`]), with
//! the same routing, chain-id check, failover and health accounting as a
//! lookup.
//!
//! A revert is the chain's answer about the call: [`RpcError::Reverted`],
//! counted as a healthy exchange and never retried elsewhere. Call data and
//! results are bounded ([`MAX_CALL_DATA_BYTES`], [`MAX_CALL_RESULT_BYTES`]),
//! and a node's fee or gas suggestion above its ceiling is refused
//! ([`MAX_FEE_PER_GAS_CEILING`], [`MAX_GAS_LIMIT`]): a lying or congested
//! node must not make the payee sign an absurd fee.

use alloy_primitives::{Address, Bytes, U64, U128};

use super::error::{as_revert, classify};
use super::{EthCall, PrepareTx, RpcError, Shared, Simulate};

/// The most call data an [`EthCall`] or [`PrepareTx`] sends.
pub const MAX_CALL_DATA_BYTES: usize = 64 * 1024;
/// The most an `eth_call` may return.
pub const MAX_CALL_RESULT_BYTES: usize = 64 * 1024;
/// The margin added to the node's gas estimate.
pub const GAS_MARGIN_PERCENT: u64 = 20;
/// The least gas limit prepared (a plain transfer's).
pub const MIN_GAS_LIMIT: u64 = 21_000;
/// The most gas limit prepared: a block's gas on Tempo's dev chain.
pub const MAX_GAS_LIMIT: u64 = 30_000_000;
/// The highest max fee per gas prepared: 1,000 gwei, about fifty times a
/// Tempo dev chain's price.
pub const MAX_FEE_PER_GAS_CEILING: u64 = 1_000_000_000_000;

/// The fee and nonce fields of a type-2 transaction, as a node suggests
/// them, within the ceilings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxParams {
    /// The sender's next nonce, pending transactions included.
    pub nonce: u64,
    /// The node's estimate plus [`GAS_MARGIN_PERCENT`], at least
    /// [`MIN_GAS_LIMIT`].
    pub gas_limit: u64,
    /// Twice the node's gas price plus the priority fee: room for the base
    /// fee to rise before the transaction is mined.
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

impl TxParams {
    /// The parameters from what a node said: `tip` is `None` when the node
    /// has no `eth_maxPriorityFeePerGas`.
    pub fn from_node(nonce: u64, estimate: u64, gas_price: u128, tip: Option<u128>) -> Result<TxParams, RpcError> {
        let gas_limit = (u128::from(estimate) * u128::from(100 + GAS_MARGIN_PERCENT) / 100).max(MIN_GAS_LIMIT.into());
        let gas_limit =
            u64::try_from(gas_limit)
                .ok()
                .filter(|&g| g <= MAX_GAS_LIMIT)
                .ok_or(RpcError::GasAboveCeiling {
                    gas_limit: u64::try_from(gas_limit).unwrap_or(u64::MAX),
                    ceiling: MAX_GAS_LIMIT,
                })?;
        let max_priority_fee_per_gas = tip.unwrap_or(0);
        let max_fee_per_gas = gas_price.saturating_mul(2).saturating_add(max_priority_fee_per_gas);
        if max_fee_per_gas > u128::from(MAX_FEE_PER_GAS_CEILING) {
            return Err(RpcError::FeeAboveCeiling {
                max_fee_per_gas: u64::try_from(max_fee_per_gas).unwrap_or(u64::MAX),
                ceiling: MAX_FEE_PER_GAS_CEILING,
            });
        }
        Ok(TxParams {
            nonce,
            gas_limit,
            max_fee_per_gas,
            max_priority_fee_per_gas,
        })
    }
}

/// The call object of `eth_call` and `eth_estimateGas`.
#[derive(Clone, Debug, serde::Serialize)]
struct CallObject<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<Address>,
    to: Address,
    data: &'a Bytes,
}

/// A node's answer refusing a simulated transaction (any JSON-RPC error:
/// a revert, an intrinsic-gas or validity refusal): its revert data, or its
/// message. Transport failures stay errors.
fn refusal(e: alloy_transport::TransportError) -> Result<Bytes, alloy_transport::TransportError> {
    match e {
        alloy_json_rpc::RpcError::ErrorResp(p) => {
            let data = p
                .data
                .as_deref()
                .and_then(|raw| serde_json::from_str::<Bytes>(raw.get()).ok())
                .unwrap_or_else(|| Bytes::from(p.message.to_string().into_bytes()));
            Ok(data.slice(..data.len().min(super::MAX_REVERT_BYTES)))
        }
        other => Err(other),
    }
}

fn bounded_data(data: &Bytes) -> Result<(), RpcError> {
    if data.len() > MAX_CALL_DATA_BYTES {
        return Err(RpcError::TooLarge {
            len: data.len(),
            limit: MAX_CALL_DATA_BYTES,
        });
    }
    Ok(())
}

impl Shared {
    pub(super) async fn eth_call(&self, msg: EthCall) -> Result<Bytes, RpcError> {
        bounded_data(&msg.data)?;
        self.failover(msg.chain_id, "eth_call", |i| self.eth_call_on(i, &msg))
            .await
    }

    async fn eth_call_on(&self, i: usize, msg: &EthCall) -> Result<Bytes, RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        let object = CallObject {
            from: None,
            to: msg.to,
            data: &msg.data,
        };
        let call = e.client.request::<_, Bytes>("eth_call", (object, "latest"));
        // A revert is an answer: the exchange succeeded.
        let answer = self
            .exchange(i, &["eth_call"], async move {
                match call.await {
                    Ok(out) => Ok(Ok(out)),
                    Err(err) => as_revert(err).map(Err),
                }
            })
            .await?;
        match answer {
            Ok(out) if out.len() > MAX_CALL_RESULT_BYTES => Err(RpcError::Malformed(format!(
                "eth_call returned {} bytes, more than {MAX_CALL_RESULT_BYTES}",
                out.len()
            ))),
            Ok(out) => Ok(out),
            Err(data) => Err(RpcError::Reverted(data)),
        }
    }

    pub(super) async fn simulate(&self, msg: Simulate) -> Result<(), RpcError> {
        for (_, data) in &msg.calls {
            bounded_data(data)?;
        }
        self.failover(msg.chain_id, "simulate", |i| self.simulate_on(i, &msg))
            .await
    }

    async fn simulate_on(&self, i: usize, msg: &Simulate) -> Result<(), RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        for (to, data) in &msg.calls {
            let object = serde_json::json!({ "from": msg.from, "to": to, "data": data, "gas": U64::from(msg.gas) });
            let call = e.client.request::<_, Bytes>("eth_call", (object, "latest"));
            let answer = self
                .exchange(i, &["eth_call"], async move {
                    match call.await {
                        Ok(_) => Ok(Ok(())),
                        Err(err) => refusal(err).map(Err),
                    }
                })
                .await?;
            answer.map_err(RpcError::Reverted)?;
        }
        let calls: Vec<serde_json::Value> = msg
            .calls
            .iter()
            .map(|(to, data)| serde_json::json!({ "to": to, "data": data, "value": "0x0" }))
            .collect();
        let object = serde_json::json!({
            "from": msg.from,
            "type": "0x76",
            "calls": calls,
            "nonceKey": msg.nonce_key,
            "validBefore": U64::from(msg.valid_before),
            "feePayer": msg.fee_payer,
            "feeToken": msg.fee_token,
        });
        let estimate = e.client.request::<_, U64>("eth_estimateGas", (object,));
        let answer = self
            .exchange(i, &["eth_estimateGas"], async move {
                match estimate.await {
                    Ok(g) => Ok(Ok(g.saturating_to::<u64>())),
                    Err(err) => refusal(err).map(Err),
                }
            })
            .await?;
        match answer {
            Ok(needed) if needed <= msg.gas => Ok(()),
            Ok(needed) => Err(RpcError::Reverted(Bytes::from(
                format!("out of gas: needs {needed}, carries {}", msg.gas).into_bytes(),
            ))),
            Err(data) => Err(RpcError::Reverted(data)),
        }
    }

    pub(super) async fn prepare_tx(&self, msg: PrepareTx) -> Result<TxParams, RpcError> {
        bounded_data(&msg.data)?;
        self.failover(msg.chain_id, "prepare_tx", |i| self.prepare_tx_on(i, &msg))
            .await
    }

    /// One batch: the pending nonce, the gas estimate, the gas price and
    /// the priority fee.
    async fn prepare_tx_on(&self, i: usize, msg: &PrepareTx) -> Result<TxParams, RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        let cl = |x| classify(x, &e.redactor);
        let object = CallObject {
            from: Some(msg.from),
            to: msg.to,
            data: &msg.data,
        };
        let mut batch = e.client.new_batch();
        let nonce = batch
            .add_call::<_, U64>("eth_getTransactionCount", &(msg.from, "pending"))
            .map_err(cl)?;
        let gas = batch.add_call::<_, U64>("eth_estimateGas", &(object,)).map_err(cl)?;
        let price = batch.add_call::<_, U128>("eth_gasPrice", &()).map_err(cl)?;
        let tip = batch.add_call::<_, U128>("eth_maxPriorityFeePerGas", &()).map_err(cl)?;
        let methods = [
            "eth_getTransactionCount",
            "eth_estimateGas",
            "eth_gasPrice",
            "eth_maxPriorityFeePerGas",
        ];
        let (nonce, gas, price, tip) = self
            .exchange(i, &methods, async move {
                batch.send().await?;
                let nonce = nonce.await?.to::<u64>();
                // A call that would revert cannot be estimated: an answer.
                let gas = match gas.await {
                    Ok(g) => Ok(g.saturating_to::<u64>()),
                    Err(err) => Err(as_revert(err)?),
                };
                let price = price.await?.to::<u128>();
                let tip = match tip.await {
                    Ok(t) => Some(t.to::<u128>()),
                    // -32601: the node has no such method.
                    Err(alloy_json_rpc::RpcError::ErrorResp(p)) if p.code == -32601 => None,
                    Err(err) => return Err(err),
                };
                Ok((nonce, gas, price, tip))
            })
            .await?;
        let estimate = gas.map_err(RpcError::Reverted)?;
        TxParams::from_node(nonce, estimate, price, tip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gas_limit_has_its_margin_and_floor_and_fees_their_ceiling() {
        let p = TxParams::from_node(7, 300_000, 21_000_000_000, Some(1_000_000_000)).unwrap();
        assert_eq!(
            p,
            TxParams {
                nonce: 7,
                gas_limit: 360_000,
                max_fee_per_gas: 43_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
            }
        );
        assert_eq!(TxParams::from_node(0, 1, 1, None).unwrap().gas_limit, MIN_GAS_LIMIT);
        assert_eq!(TxParams::from_node(0, 1, 1, None).unwrap().max_priority_fee_per_gas, 0);
        assert_eq!(
            TxParams::from_node(0, 21_000, MAX_FEE_PER_GAS_CEILING.into(), None),
            Err(RpcError::FeeAboveCeiling {
                max_fee_per_gas: 2 * MAX_FEE_PER_GAS_CEILING,
                ceiling: MAX_FEE_PER_GAS_CEILING
            })
        );
        assert!(matches!(
            TxParams::from_node(0, 21_000, u128::MAX, Some(u128::MAX)),
            Err(RpcError::FeeAboveCeiling {
                max_fee_per_gas: u64::MAX,
                ..
            })
        ));
        // at the ceiling exactly is allowed
        let at = TxParams::from_node(0, 21_000, (MAX_FEE_PER_GAS_CEILING / 2).into(), None).unwrap();
        assert_eq!(at.max_fee_per_gas, u128::from(MAX_FEE_PER_GAS_CEILING));
        assert!(matches!(
            TxParams::from_node(0, MAX_GAS_LIMIT, 1, None),
            Err(RpcError::GasAboveCeiling { .. })
        ));
        assert!(matches!(
            TxParams::from_node(0, u64::MAX, 1, None),
            Err(RpcError::GasAboveCeiling {
                gas_limit: u64::MAX,
                ..
            })
        ));
        let e = RpcError::FeeAboveCeiling {
            max_fee_per_gas: 1,
            ceiling: 0,
        };
        assert_eq!(e.cause(), "rpc_fee_ceiling");
    }

    #[test]
    fn call_data_is_bounded() {
        assert!(bounded_data(&Bytes::from(vec![0; MAX_CALL_DATA_BYTES])).is_ok());
        assert_eq!(
            bounded_data(&Bytes::from(vec![0; MAX_CALL_DATA_BYTES + 1])),
            Err(RpcError::TooLarge {
                len: MAX_CALL_DATA_BYTES + 1,
                limit: MAX_CALL_DATA_BYTES
            })
        );
    }
}
