//! A payment channel's states, as the outbox logged them, turned into its
//! row and its events. The derivation is pure ([`derive`]); [`write`]
//! applies it under the channel row's lock, in the batch's transaction.
//!
//! Cumulative amounts only ever rise: a state at or below what the row
//! says (a batch drained twice, another instance's copy) adds nothing, so
//! every event is written once and the totals add up exactly.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use settlegate_rules::session::ChannelState;

use super::LedgerError;

/// What the books hold of a channel: the cumulative facts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u128,
    pub spent: u128,
    pub served: u64,
    pub settled: u128,
    pub closing: bool,
    pub finalized: bool,
}

/// One event of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: &'static str,
    pub amount: u128,
    pub total: u128,
    pub requests: u64,
}

/// The totals a channel starts from when the gate first sees it: what the
/// chain had settled already counts as accepted and spent (as the channel
/// book's fresh state does).
pub fn opening(first: &ChannelState) -> Totals {
    let settled = first.chain.settled;
    Totals {
        accepted: settled,
        spent: settled,
        served: 0,
        settled,
        closing: false,
        finalized: false,
    }
}

/// The events `states` (in the order written) add to `from`, and the
/// totals after them. Usage is aggregated into one event.
pub fn derive(from: Totals, states: &[ChannelState]) -> (Totals, Vec<Event>) {
    let mut now = from;
    let mut events = Vec::new();
    let (mut used, mut requests) = (0u128, 0u64);
    for s in states {
        if s.accepted > now.accepted {
            events.push(Event {
                kind: "voucher",
                amount: s.accepted - now.accepted,
                total: s.accepted,
                requests: 0,
            });
            now.accepted = s.accepted;
        }
        if s.spent > now.spent {
            used += s.spent - now.spent;
            now.spent = s.spent;
        }
        if s.served > now.served {
            requests += s.served - now.served;
            now.served = s.served;
        }
        if s.chain.settled > now.settled {
            events.push(Event {
                kind: "settlement",
                amount: s.chain.settled - now.settled,
                total: s.chain.settled,
                requests: 0,
            });
            now.settled = s.chain.settled;
        }
        if (s.closing || s.chain.close_requested_at > 0) && !now.closing {
            events.push(Event {
                kind: "close",
                amount: 0,
                total: now.accepted,
                requests: 0,
            });
            now.closing = true;
        }
        if s.chain.finalized && !now.finalized {
            events.push(Event {
                kind: "finalized",
                amount: 0,
                total: now.settled,
                requests: 0,
            });
            now.finalized = true;
        }
    }
    if used > 0 || requests > 0 {
        events.push(Event {
            kind: "usage",
            amount: used,
            total: now.spent,
            requests,
        });
    }
    (now, events)
}

/// A settlement of a channel the books recorded (for the
/// `session.settled` webhook).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The book's name of the channel (`<chain id>:<escrow>:<id>`).
    pub channel: String,
    pub chain_id: i64,
    pub escrow: String,
    pub channel_id: String,
    pub payer: String,
    pub payee: String,
    pub token: String,
    /// By how much settled rose, and to what.
    pub amount: String,
    pub settled: String,
    /// Whether the channel is finalized (closed on chain) with it.
    pub finalized: bool,
    /// Unix seconds, when the books recorded it.
    pub at: i64,
}

/// `channel:<chain id>:<escrow>:<id>` → the book's name of the channel.
pub fn channel_name(key: &str) -> Option<&str> {
    key.strip_prefix("channel:")
}

/// Whether `name` is a channel's name the books can hold (its chain id
/// fits the database's integers); why not, for `outbox_rejects`.
pub fn readable_name(name: &str) -> Result<(), String> {
    match crate::channels::parse_channel_key(name) {
        None => Err("not a channel's name (<chain id>:<escrow>:<id>)".into()),
        Some((chain_id, ..)) if i64::try_from(chain_id).is_err() => {
            Err(format!("chain id {chain_id} is beyond what the ledger stores"))
        }
        Some(_) => Ok(()),
    }
}

fn u128_of(text: &str) -> Result<u128, LedgerError> {
    text.parse()
        .map_err(|_| LedgerError::Corrupt("a channel amount beyond u128".into()))
}

/// Applies each channel's states (in write order) in `client`'s
/// transaction: the row locked, its events derived and inserted, its
/// totals raised. Channels in name order, so two writers never deadlock.
/// The settlements it recorded come back, for the webhooks.
pub async fn write(
    client: &impl GenericClient,
    states: &BTreeMap<String, Vec<ChannelState>>,
) -> Result<Vec<Settled>, LedgerError> {
    let mut settled = Vec::new();
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for (name, states) in states {
        let Some(first) = states.first() else { continue };
        let Some((chain_id, escrow, id)) = crate::channels::parse_channel_key(name) else {
            continue;
        };
        let base = opening(first);
        let hex = |a: &alloy_primitives::Address| format!("{a:#x}");
        let inserted = client
            .query(
                "INSERT INTO channels (channel, chain_id, escrow, channel_id, payer, payee, token, deposit,
                    accepted, spent, served, settled, closing, finalized)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::numeric, $9::text::numeric, $9::text::numeric,
                    0, $9::text::numeric, false, false)
                 ON CONFLICT (channel) DO NOTHING RETURNING channel",
                &[
                    &name,
                    &i64::try_from(chain_id).unwrap_or(i64::MAX),
                    &hex(&escrow),
                    &id.to_string(),
                    &hex(&first.chain.payer),
                    &hex(&first.chain.payee),
                    &hex(&first.chain.token),
                    &first.chain.deposit.to_string(),
                    &base.accepted.to_string(),
                ],
            )
            .await?;
        if !inserted.is_empty() {
            client
                .execute(
                    "INSERT INTO channel_events (channel, kind, amount, total) \
                     VALUES ($1, 'open', $2::text::numeric, $3::text::numeric)",
                    &[&name, &first.chain.deposit.to_string(), &base.settled.to_string()],
                )
                .await?;
        }
        let row = client
            .query_one(
                "SELECT accepted::text, spent::text, served, settled::text, closing, finalized
                 FROM channels WHERE channel = $1 FOR UPDATE",
                &[&name],
            )
            .await?;
        let from = Totals {
            accepted: u128_of(row.get(0))?,
            spent: u128_of(row.get(1))?,
            served: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            settled: u128_of(row.get(3))?,
            closing: row.get(4),
            finalized: row.get(5),
        };
        let (now, events) = derive(from, states);
        if events.is_empty() {
            continue;
        }
        let last = states.last().unwrap_or(first);
        client
            .execute(
                "UPDATE channels SET accepted = $2::text::numeric, spent = $3::text::numeric, served = $4,
                    settled = $5::text::numeric, closing = $6, finalized = $7,
                    deposit = GREATEST(deposit, $8::text::numeric), updated_at = now()
                 WHERE channel = $1",
                &[
                    &name,
                    &now.accepted.to_string(),
                    &now.spent.to_string(),
                    &(now.served.min(i64::MAX as u64) as i64),
                    &now.settled.to_string(),
                    &now.closing,
                    &now.finalized,
                    &last.chain.deposit.to_string(),
                ],
            )
            .await?;
        for e in &events {
            client
                .execute(
                    "INSERT INTO channel_events (channel, kind, amount, total, requests) \
                     VALUES ($1, $2, $3::text::numeric, $4::text::numeric, $5)",
                    &[
                        &name,
                        &e.kind,
                        &e.amount.to_string(),
                        &e.total.to_string(),
                        &(e.requests.min(i64::MAX as u64) as i64),
                    ],
                )
                .await?;
        }
        for e in events.iter().filter(|e| e.kind == "settlement") {
            settled.push(Settled {
                channel: name.clone(),
                chain_id: i64::try_from(chain_id).unwrap_or(i64::MAX),
                escrow: hex(&escrow),
                channel_id: id.to_string(),
                payer: hex(&first.chain.payer),
                payee: hex(&first.chain.payee),
                token: hex(&first.chain.token),
                amount: e.amount.to_string(),
                settled: e.total.to_string(),
                finalized: now.finalized,
                at,
            });
        }
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use settlegate_rules::session::OnChain;

    fn state(accepted: u128, spent: u128, served: u64, settled: u128) -> ChannelState {
        let mut s = ChannelState::fresh(
            OnChain {
                finalized: false,
                close_requested_at: 0,
                payer: alloy_primitives::Address::repeat_byte(0x11),
                payee: alloy_primitives::Address::repeat_byte(0x22),
                token: alloy_primitives::Address::repeat_byte(0x20),
                authorized_signer: alloy_primitives::Address::ZERO,
                deposit: 10_000,
                settled,
            },
            1,
        );
        s.accepted = accepted;
        s.spent = spent;
        s.served = served;
        s
    }

    fn sum(events: &[Event], kind: &str) -> u128 {
        events.iter().filter(|e| e.kind == kind).map(|e| e.amount).sum()
    }

    #[test]
    fn vouchers_one_by_one_usage_aggregated_and_everything_adds_up() {
        let states = [
            state(100, 10, 1, 0),
            state(200, 20, 2, 0),
            state(200, 35, 3, 0),
            state(300, 45, 4, 150),
        ];
        let start = opening(&states[0]);
        let (now, events) = derive(start, &states);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["voucher", "voucher", "voucher", "settlement", "usage"]);
        assert_eq!(start.accepted + sum(&events, "voucher"), now.accepted);
        assert_eq!(start.spent + sum(&events, "usage"), now.spent);
        assert_eq!(start.settled + sum(&events, "settlement"), now.settled);
        assert_eq!((now.accepted, now.spent, now.served, now.settled), (300, 45, 4, 150));
        assert_eq!(events.last().unwrap().requests, 4);
    }

    #[test]
    fn states_already_booked_add_nothing() {
        let states = [state(100, 10, 1, 0), state(200, 20, 2, 0)];
        let (now, _) = derive(opening(&states[0]), &states);
        let (again, events) = derive(now, &states);
        assert_eq!((again, events), (now, vec![]), "a batch drained twice");
        // An older state after a newer one (another copy) adds nothing.
        let (_, events) = derive(now, &[state(150, 15, 1, 0)]);
        assert!(events.is_empty());
    }

    #[test]
    fn what_was_settled_before_the_gate_saw_the_channel_is_the_opening() {
        let first = state(500, 500, 0, 500);
        let start = opening(&first);
        assert_eq!((start.accepted, start.spent, start.settled), (500, 500, 500));
        let (_, events) = derive(start, &[first, state(600, 520, 1, 500)]);
        assert_eq!(sum(&events, "voucher"), 100);
        assert_eq!(sum(&events, "usage"), 20);
        assert_eq!(sum(&events, "settlement"), 0);
    }

    #[test]
    fn only_names_the_books_can_hold_are_read() {
        let id = format!("0x{}", "01".repeat(32));
        let escrow = format!("0x{}", "e5".repeat(20));
        assert_eq!(readable_name(&format!("42431:{escrow}:{id}")), Ok(()));
        assert!(readable_name("42431:nonsense").is_err());
        let too_far = format!("{}:{escrow}:{id}", u64::MAX);
        assert!(readable_name(&too_far).unwrap_err().contains("beyond"));
    }

    #[test]
    fn a_close_and_a_finalisation_are_each_one_event() {
        let mut closing = state(100, 100, 1, 0);
        closing.closing = true;
        let mut done = closing.clone();
        done.chain.finalized = true;
        done.chain.settled = 100;
        let (now, events) = derive(opening(&closing), &[closing.clone(), closing, done.clone(), done]);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["voucher", "close", "settlement", "finalized", "usage"]);
        assert!(now.closing && now.finalized);
    }
}
