//! Broadcasting a signed transaction: `eth_sendRawTransactionSync`, or
//! `eth_sendRawTransaction` on a node without it. A node refusing the
//! transaction is an answer about the transaction (`Rejected`), not a
//! fault of the endpoint; "known already" means it was broadcast, and so
//! does a synchronous send that waited out its time with the transaction
//! in the node's pool (`Accepted`: its fate is unknown, not refused).

use super::error::{already_known, pooled_not_mined};
use super::{ATTEMPTS, Broadcast, RpcError, Shared, Submitted};

impl Shared {
    pub(super) async fn broadcast(&self, msg: Broadcast) -> Result<Submitted, RpcError> {
        let mut last = None;
        let mut attempts = 0;
        for i in self.route(msg.chain_id) {
            if attempts == ATTEMPTS {
                break;
            }
            if !self.acquire(i) {
                continue;
            }
            match self.broadcast_on(i, &msg).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoints[i].label, error = %e, cause = e.cause(),
                        "RPC broadcast failed");
                    if !matches!(e, RpcError::WrongChain { .. }) {
                        attempts += 1;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_route(msg.chain_id)))
    }

    pub(super) async fn broadcast_on(&self, i: usize, msg: &Broadcast) -> Result<Submitted, RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        // A node refusing the transaction is an answer about the
        // transaction, not a fault of the endpoint.
        let refused = |r: &RpcError| matches!(r, RpcError::JsonRpc { .. });
        let sync = self
            .exchange_with(
                i,
                &["eth_sendRawTransactionSync"],
                e.client
                    .request::<_, serde_json::Value>("eth_sendRawTransactionSync", (&msg.raw,)),
                refused,
            )
            .await;
        let error = match sync {
            Ok(_) => return Ok(Submitted::Mined),
            // -32601: the node has no synchronous method.
            Err(RpcError::JsonRpc { code: -32601, .. }) => {
                match self
                    .exchange_with(
                        i,
                        &["eth_sendRawTransaction"],
                        e.client
                            .request::<_, serde_json::Value>("eth_sendRawTransaction", (&msg.raw,)),
                        refused,
                    )
                    .await
                {
                    Ok(_) => return Ok(Submitted::Accepted),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        match error {
            RpcError::JsonRpc { message, .. } if already_known(&message) => Ok(Submitted::Known),
            RpcError::JsonRpc { code, message } if pooled_not_mined(code, &message) => Ok(Submitted::Accepted),
            RpcError::JsonRpc { message, .. } => Ok(Submitted::Rejected(message)),
            other => Err(other),
        }
    }
}
