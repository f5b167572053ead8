//! One HTTP round trip with one endpoint, with its bookkeeping: a span
//! when traces are exported, the call and HTTP metrics, the endpoint's
//! health; and the chain-id probe that every request routed to an
//! endpoint relies on.

use std::sync::atomic::Ordering;
use std::time::Instant;

use alloy_primitives::U64;
use alloy_transport::TransportError;
use tracing::Instrument;

use super::error::classify;
use super::metrics::{HttpLabels, RpcLabels};
use super::{RpcError, Shared};

impl Shared {
    /// Reads the chain id of every endpoint `pick` selects; one round at a
    /// time (a slow node must not pile probes up).
    pub(super) async fn probe_all(&self, pick: impl Fn(usize) -> bool) {
        if self.probe_round.swap(true, Ordering::AcqRel) {
            return;
        }
        for i in (0..self.endpoints.len()).filter(|&i| pick(i)) {
            let _ = self.probe_chain(i).await;
        }
        self.probe_round.store(false, Ordering::Release);
    }

    /// Asks one endpoint for its chain id, records it and logs a change.
    pub(super) async fn probe_chain(&self, i: usize) -> Result<u64, RpcError> {
        let e = &self.endpoints[i];
        let id = self
            .exchange(i, &["eth_chainId"], e.client.request_noparams::<U64>("eth_chainId"))
            .await
            .map(|id| id.to::<u64>());
        let mut h = e.health.lock();
        match &id {
            Ok(id) => {
                if h.chain_id != Some(*id) {
                    tracing::info!(endpoint = %e.label, chain_id = id, previous = ?h.chain_id, "RPC endpoint chain id");
                }
                h.chain_id = Some(*id);
                h.chain_checked = true;
            }
            Err(err) => tracing::warn!(endpoint = %e.label, error = %err, "RPC endpoint did not tell its chain id"),
        }
        id
    }

    /// Checks the endpoint's chain id unless it is verified already.
    pub(super) async fn ensure_chain(&self, i: usize, chain_id: u64) -> Result<(), RpcError> {
        let verified = {
            let h = self.endpoints[i].health.lock();
            h.chain_checked && h.chain_id == Some(chain_id)
        };
        if !verified {
            let got = self.probe_chain(i).await?;
            if got != chain_id {
                return Err(RpcError::WrongChain { got, want: chain_id });
            }
        }
        Ok(())
    }

    /// Records a failure found after the exchange itself succeeded.
    pub(super) fn fail<T>(&self, i: usize, err: RpcError) -> Result<T, RpcError> {
        self.record(i, Err(&err), None);
        Err(err)
    }

    /// One HTTP round trip carrying `methods`, with health and metrics
    /// bookkeeping.
    pub(super) async fn exchange<T>(
        &self,
        i: usize,
        methods: &[&'static str],
        call: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, RpcError> {
        self.exchange_with(i, methods, call, |_| false).await
    }

    /// [`Shared::exchange`], where errors `not_a_fault` selects count for
    /// the endpoint's health as answers, not failures.
    pub(super) async fn exchange_with<T>(
        &self,
        i: usize,
        methods: &[&'static str],
        call: impl Future<Output = Result<T, TransportError>>,
        not_a_fault: impl Fn(&RpcError) -> bool,
    ) -> Result<T, RpcError> {
        let started = Instant::now();
        let e = &self.endpoints[i];
        // none when nothing exports traces
        let span = crate::traces_on().then(|| {
            tracing::info_span!(
                target: crate::TRACE_TARGET,
                "rpc_call",
                otel.name = methods.first().copied().unwrap_or("rpc"),
                otel.kind = "client",
                rpc.system.name = "jsonrpc",
                rpc.method = %methods.join(","),
                server.address = %e.label,
                outcome = tracing::field::Empty,
                error.type = tracing::field::Empty,
            )
        });
        let result = match &span {
            Some(span) => call.instrument(span.clone()).await,
            None => call.await,
        }
        .map_err(|x| classify(x, &e.redactor));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        if let Some(span) = &span {
            span.record("outcome", outcome);
            if let Err(err) = &result {
                span.record("error.type", err.cause());
            }
        }
        for &method in methods {
            e.calls.with(
                method,
                outcome,
                || {
                    self.metrics
                        .calls
                        .get_or_create(&RpcLabels {
                            endpoint: e.label.clone(),
                            method,
                            outcome,
                        })
                        .clone()
                },
                |c| {
                    c.inc();
                },
            );
        }
        let took = started.elapsed().as_secs_f64();
        e.http.with(
            outcome,
            "",
            || {
                let labels = HttpLabels {
                    endpoint: e.label.clone(),
                    outcome,
                };
                let http = self.metrics.http.get_or_create(&labels).clone();
                let latency = self.metrics.latency.get_or_create(&labels).clone();
                (http, latency)
            },
            |(http, latency)| {
                http.inc();
                latency.observe(took);
            },
        );
        let health = match &result {
            Err(e) if not_a_fault(e) => Ok(()),
            other => other.as_ref().map(|_| ()),
        };
        self.record(i, health, Some(started.elapsed()));
        result
    }
}
