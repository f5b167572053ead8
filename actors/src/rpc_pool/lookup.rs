//! Receipt lookup: one HTTP round trip on the happy path (the receipt
//! alone, or with `eth_blockNumber` in one batch when the policy asks for
//! more than one confirmation); the receipt's block only when a node gives
//! no timestamp. A node answering with another transaction's receipt
//! counts as failed.

use alloy_primitives::U64;
use settlegate_rules::settlement::{BlockHeader, ChainFacts, Receipt};

use super::error::classify;
use super::{ATTEMPTS, Lookup, RpcError, Shared};

impl Shared {
    pub(super) async fn lookup(&self, msg: Lookup) -> Result<ChainFacts, RpcError> {
        let order = self.route(msg.chain_id);
        let mut last = None;
        let mut attempts = 0;
        for i in order {
            if attempts == ATTEMPTS {
                break;
            }
            if !self.acquire(i) {
                continue;
            }
            match self.lookup_on(i, msg).await {
                Ok(facts) => return Ok(facts),
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoints[i].label, error = %e, cause = e.cause(),
                        tx_hash = %msg.hash, "RPC lookup failed");
                    // A node found on another chain is not an attempt at
                    // the payment: look for one on the right chain.
                    if !matches!(e, RpcError::WrongChain { .. }) {
                        attempts += 1;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_route(msg.chain_id)))
    }

    pub(super) async fn lookup_on(&self, i: usize, msg: Lookup) -> Result<ChainFacts, RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        let hash = *msg.hash.as_b256();
        let (receipt, head) = if msg.need_head {
            let mut batch = e.client.new_batch();
            let receipt = batch
                .add_call::<_, Option<Receipt>>("eth_getTransactionReceipt", &(hash,))
                .map_err(|x| classify(x, &e.redactor))?;
            let head = batch
                .add_call::<_, U64>("eth_blockNumber", &())
                .map_err(|x| classify(x, &e.redactor))?;
            self.exchange(i, &["eth_getTransactionReceipt", "eth_blockNumber"], async move {
                batch.send().await?;
                Ok((receipt.await?, Some(head.await?.to::<u64>())))
            })
            .await?
        } else {
            let receipt = self
                .exchange(
                    i,
                    &["eth_getTransactionReceipt"],
                    e.client
                        .request::<_, Option<Receipt>>("eth_getTransactionReceipt", (hash,)),
                )
                .await?;
            (receipt, None)
        };
        if let Some(r) = &receipt
            && r.transaction_hash != hash
        {
            return self.fail(
                i,
                RpcError::Malformed(format!("answered with the receipt of {:#x}", r.transaction_hash)),
            );
        }
        let mut facts = ChainFacts {
            receipt,
            block: None,
            head,
        };
        if facts.needs_block()
            && let Some(number) = facts.receipt.as_ref().and_then(|r| r.block_number)
        {
            // A node that does not date its receipts: one more round trip.
            facts.block = self
                .exchange(
                    i,
                    &["eth_getBlockByNumber"],
                    e.client
                        .request::<_, Option<BlockHeader>>("eth_getBlockByNumber", (number, false)),
                )
                .await?;
        }
        Ok(facts)
    }
}
