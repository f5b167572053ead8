//! A credential answering a sponsored challenge, before the settlement
//! flow: a `hash` credential is refused (the spec: the client must not
//! broadcast), the hand-off is decoded and its sender recovered, judged
//! against the genome's caps, and co-signed by the sponsor. The flow then
//! judges its calls like any pull-mode payment, simulates it, holds its fee
//! from the budget and broadcasts it once.
//!
//! Every refusal here happens before anything is simulated, held or
//! broadcast: it costs the sponsor nothing.

use settlegate_rules::mpp::{self, Payload, PaymentCredential};
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::replay::Scheme;
use settlegate_rules::settlement::{PayerRule, Reason};
use settlegate_rules::sponsor::{Handoff, HandoffError};
use time::OffsetDateTime;

use super::AppState;
use crate::outcome::Denial;
use crate::settle::{SettleRequest, Sponsored};

/// The settlement request of a sponsored credential, or why it is refused.
/// The caller fills in the resource and the idempotency digest.
pub fn request(
    state: &AppState,
    policy: &SettlementPolicy,
    cred: &PaymentCredential,
    payer: PayerRule,
    now: OffsetDateTime,
) -> Result<SettleRequest, Denial> {
    let raw = match &cred.payload {
        Payload::Hash(_) | Payload::Proof(_) => return Err(Denial::Failed(Reason::SponsorshipNeedsPull)),
        Payload::Transaction(raw) => raw,
    };
    let (Some(sponsor), Some(caps)) = (&state.sponsor, &policy.sponsorship) else {
        return Err(Denial::Failed(Reason::SponsorshipUnavailable));
    };
    let handoff = match Handoff::parse(raw) {
        Ok(h) => h,
        Err(HandoffError::Undecodable(e)) => return Err(Denial::MalformedCredential(e.to_string())),
        Err(e) => {
            tracing::info!(why = %e, "a sponsored transaction refused before its co-signature");
            sponsor.count("refused");
            return Err(Denial::Failed(Reason::SponsorshipRefused));
        }
    };
    let expires = mpp::echoed_expires(&cred.challenge)
        .map(|t| t.unix_timestamp().max(0) as u64)
        .unwrap_or(0);
    let now_unix = now.unix_timestamp().max(0) as u64;
    let sponsorable = caps.judge(&handoff, now_unix, expires).map_err(|e| {
        tracing::info!(why = %e, sender = %handoff.sender, "a sponsored transaction is outside the caps");
        sponsor.count("refused");
        Denial::Failed(Reason::SponsorshipRefused)
    })?;
    let signed = handoff
        .cosign(sponsorable.fee_token, sponsor.key())
        .map_err(|_| Denial::Failed(Reason::SponsorshipUnavailable))?;
    let Some(valid_before) = handoff.valid_before else {
        return Err(Denial::Failed(Reason::SponsorshipRefused));
    };
    Ok(SettleRequest {
        hash: signed.hash.into(),
        scheme: Scheme::Payment,
        resource: None,
        request_digest: None,
        binding: Some(mpp::Binding::new(&policy.realm, &cred.challenge.id)),
        payer,
        submit: Some(signed.raw.into()),
        sponsored: Some(Sponsored {
            sender: handoff.sender,
            calls: handoff
                .calls
                .iter()
                .filter_map(|c| c.to.map(|to| (to, c.input.clone().into())))
                .collect(),
            gas: handoff.gas_limit,
            max_fee: sponsorable.max_fee,
            fee_token: sponsorable.fee_token,
            valid_before,
            nonce_key: handoff.nonce_key,
        }),
    })
}
