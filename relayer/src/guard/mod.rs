//! Value safety in the validators: what a quorum of compromised keys cannot be stopped
//! from signing, each honest validator refuses to sign.
//!
//! - The accountant ([`books`]): per token route, what the origin's bridge locked and the
//!   destination's bridge released, from final events on both chains (booked with the
//!   scan cursor that passes their block, so a fresh store rebuilds them from the
//!   chain). A transfer that would take its route's released past locked, or that moves
//!   tokens its origin holds unbacked, is refused: held unsigned, counted, logged.
//! - The governor: a transfer of a route's `delay_threshold` or more is held
//!   `delay_secs` before it is signed; an operator may release or cancel it.
//!
//! Held transfers ([`Held`]) live in the store; [`run`] signs them once they may be.
//! Messages that are not transfers between configured bridges are signed as before.

mod books;
mod held;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use alloy::{
    primitives::{B256, U256},
    sol_types::SolValue,
};
use ferry_light_client::{DispatchedMessage, ValidatorKey};
use ferry_messages::Message;
use tracing::{info, warn};

pub use books::{Books, Flow, Ledger, Shortfall, Side, flows};
pub use held::{Held, HoldReason};

use crate::{
    Context, StoreError,
    lifecycle::{MessageRecord, applied},
    store::now_ms,
};

/// The end of the delay of a transfer an operator released.
const RELEASED: u64 = 0;

/// Why a review of the held transfers stopped.
#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing: {0}")]
    Sign(#[from] crate::watcher::WatchError),
}

/// How often held transfers are looked at again.
const REVIEW_EVERY: Duration = Duration::from_secs(1);

/// The amount of `message` if it is a transfer from the origin's configured bridge to
/// the destination's (its body the bridge's `(recipient, amount)`); `None` otherwise.
pub(crate) fn transfer_amount(context: &Context, message: &Message) -> Option<U256> {
    let config = &context.config;
    let (_, origin) = config.chain_by_id(message.origin.into())?;
    let (_, destination) = config.chain_by_id(message.destination.into())?;
    let from_bridge = origin.bridge.is_some_and(|bridge| bridge.into_word() == message.sender);
    let to_bridge = destination.bridge.is_some() && message.recipient_address() == destination.bridge;
    if !(from_bridge && to_bridge) || message.body.len() != 64 {
        return None;
    }
    <(alloy::primitives::Address, U256)>::abi_decode(&message.body).ok().map(|(_, amount)| amount)
}

/// A route's label in metrics, logs and the API: `alpha->beta`.
pub fn route_label(context: &Context, origin: u32, destination: u32) -> String {
    format!("{}->{}", context.chain_label(origin.into()), context.chain_label(destination.into()))
}

/// Every ordered pair of configured chains with bridges, as route labels.
pub fn token_routes(context: &Context) -> Vec<String> {
    let bridged: Vec<u32> =
        context.config.chains.values().filter(|c| c.bridge.is_some()).map(|c| c.chain_id as u32).collect();
    bridged
        .iter()
        .flat_map(|&o| bridged.iter().filter(move |&&d| d != o).map(move |&d| (o, d)))
        .map(|(o, d)| route_label(context, o, d))
        .collect()
}

/// What the accountant says of a transfer of `amount` on `origin -> destination`, given
/// `ledger`: nothing when it may be signed, else why it is held. A refusal is counted and
/// logged with both sides' totals unless it was refused before (`refused_before`) or
/// waits only for the destination chain's books to catch up.
fn accountant(
    context: &Context,
    ledger: &Ledger,
    (origin, destination, amount): (u32, u32, U256),
    id: B256,
    refused_before: bool,
) -> Option<HoldReason> {
    let shortfall = ledger.check(origin, destination, amount).err()?;
    let behind = context.chain_label(destination.into());
    if shortfall.needs_reverse() && !context.caught_up(&behind) {
        let shortfall = format!("{shortfall} (until {behind}'s books catch up)");
        return Some(HoldReason::Accountant { shortfall });
    }
    let route = route_label(context, origin, destination);
    if !refused_before {
        context.metrics.accountant_refusals_total.with_label_values(&[&route]).inc();
        let (books, reverse) = (ledger.route(origin, destination), ledger.route(destination, origin));
        warn!(
            %id, %route, %amount, locked = %books.locked, released = %books.released,
            reverse_locked = %reverse.locked, reverse_released = %reverse.released, %shortfall,
            "accountant refuses to sign a transfer"
        );
    }
    Some(HoldReason::Accountant { shortfall: shortfall.to_string() })
}

/// Whether the validators sign `message` now (`None`) or hold the transfer (its amount
/// and why), given the ledger with the message's own block booked.
pub(crate) fn decide(context: &Context, ledger: &Ledger, message: &Message) -> Option<(U256, HoldReason)> {
    let amount = transfer_amount(context, message)?;
    let route = (message.origin, message.destination, amount);
    if let Some(refused) = accountant(context, ledger, route, message.id(), false) {
        return Some((amount, refused));
    }
    let rule = governor_rule(context, message.origin, message.destination)?;
    (amount >= rule.delay_threshold).then(|| {
        (amount, HoldReason::Delay { until_ms: now_ms().saturating_add(rule.delay_secs.saturating_mul(1000)) })
    })
}

fn governor_rule(context: &Context, origin: u32, destination: u32) -> Option<&crate::config::GovernorRoute> {
    let (origin, _) = context.config.chain_by_id(origin.into())?;
    let (destination, _) = context.config.chain_by_id(destination.into())?;
    context.config.governor.get(origin)?.get(destination)
}

/// A held entry for `record`'s message.
pub(crate) fn held(record: &MessageRecord, amount: U256, reason: HoldReason) -> Held {
    Held {
        id: record.id,
        origin: record.origin,
        destination: record.destination,
        amount,
        reason,
        held_at_ms: now_ms(),
        message: record.message.clone(),
        origin_mailbox: record.origin_mailbox,
        block: record.block,
    }
}

/// Publishes the books of every route (released beyond locked only while the route's
/// origin chain is caught up: before, its locks may not be booked yet) and logs a route
/// whose unbacked amount grew.
pub(crate) fn observe(context: &Context, ledger: &Ledger) {
    let metrics = &context.metrics;
    for (&(origin, destination), books) in ledger.routes() {
        let route = route_label(context, origin, destination);
        metrics.accountant_locked.with_label_values(&[&route]).set(f64_of(books.locked));
        metrics.accountant_released.with_label_values(&[&route]).set(f64_of(books.released));
        if !context.caught_up(&context.chain_label(origin.into())) {
            continue;
        }
        let unbacked = metrics.accountant_unbacked.with_label_values(&[&route]);
        let now = f64_of(books.unbacked());
        if now > unbacked.get() {
            warn!(
                %route, locked = %books.locked, released = %books.released, unbacked = %books.unbacked(),
                "accountant: the route released more than was locked for it"
            );
        }
        unbacked.set(now);
    }
}

fn f64_of(amount: U256) -> f64 {
    amount.to_string().parse().unwrap_or(f64::MAX)
}

/// Signs held transfers once they may be signed: a delay over (or released by an
/// operator) and the accountant content, or an accountant refusal whose books balance
/// again. Runs until aborted, in every process with validator keys.
pub(crate) async fn run(context: Arc<Context>, signers: Arc<Vec<ValidatorKey>>) {
    let routes = token_routes(&context);
    loop {
        if let Err(e) = review(&context, &signers, &routes).await {
            warn!(error = %e, "reviewing held transfers failed; trying again");
        }
        tokio::time::sleep(REVIEW_EVERY).await;
    }
}

async fn review(context: &Context, signers: &[ValidatorKey], routes: &[String]) -> Result<(), ReviewError> {
    let held = context.store.held()?;
    let ledger = context.store.books()?;
    let now = now_ms();
    let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for mut entry in held {
        let route = (entry.origin, entry.destination, entry.amount);
        let due = match &entry.reason {
            HoldReason::Delay { until_ms } => now >= *until_ms,
            HoldReason::Accountant { .. } => true,
        };
        if due {
            let refused_before =
                matches!(&entry.reason, HoldReason::Accountant { shortfall } if !shortfall.ends_with("catch up)"));
            match accountant(context, &ledger, route, entry.id, refused_before) {
                None => {
                    sign_held(context, signers, &entry).await?;
                    continue;
                }
                Some(reason) if reason != entry.reason => {
                    entry.reason = reason;
                    context.store.write(|tx| tx.hold(&entry))?;
                }
                Some(_) => {}
            }
        }
        *counts.entry((route_label(context, entry.origin, entry.destination), entry.reason.label())).or_default() += 1;
    }
    for route in routes {
        for reason in ["delay", "accountant"] {
            let count = counts.get(&(route.clone(), reason)).copied().unwrap_or(0);
            context.metrics.governor_held.with_label_values(&[route, reason]).set(count);
        }
    }
    Ok(())
}

/// Signs and publishes a held transfer, then lets it go (its record back to proven).
async fn sign_held(context: &Context, signers: &[ValidatorKey], entry: &Held) -> Result<(), ReviewError> {
    let Some(message) = entry.decoded() else {
        warn!(id = %entry.id, "a held transfer's stored message does not decode; dropped");
        context.store.write(|tx| tx.unhold(&entry.id).map(drop))?;
        return Ok(());
    };
    let message = DispatchedMessage { message, id: entry.id, bytes: entry.message.clone() };
    let item = crate::watcher::ToSign { message, origin_mailbox: entry.origin_mailbox, block: entry.block };
    crate::watcher::sign(context, signers, &[item]).await?;
    let why = match entry.reason {
        HoldReason::Delay { until_ms: RELEASED } => "released by an operator",
        HoldReason::Delay { .. } => "the governor's delay is over",
        HoldReason::Accountant { .. } => "the accountant's books allow it",
    };
    release(context, &entry.id, why)?;
    info!(id = %entry.id, route = %route_label(context, entry.origin, entry.destination), amount = %entry.amount, why, "held transfer signed");
    Ok(())
}

/// Removes a held transfer and moves its record back to proven with `why`.
fn release(context: &Context, id: &B256, why: &str) -> Result<(), StoreError> {
    context.store.write(|tx| {
        tx.unhold(id)?;
        if let Some(mut record) = tx.get(id)?
            && applied(record.release(why.to_string()))
        {
            tx.put(&record)?;
        }
        Ok(())
    })
}

/// What an operator asked of a held transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// End its delay now (the accountant still has its say).
    Release,
    /// Never sign it: its record is parked.
    Cancel,
}

/// Why an operator's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Nothing is held under that id.
    #[error("no held transfer {0}")]
    NotHeld(B256),
    /// The accountant holds it: releasing would sign what the books refuse.
    #[error("transfer {id} is held by the accountant ({shortfall}); cancel it, or restore the route's books")]
    Accountant {
        /// The transfer.
        id: B256,
        /// What the books say.
        shortfall: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Acts on a held transfer for an operator; returns it as it now stands.
pub fn operate(context: &Context, id: B256, action: Operator) -> Result<Held, OperatorError> {
    let mut held = context.store.write(|tx| tx.held(&id))?.ok_or(OperatorError::NotHeld(id))?;
    match action {
        Operator::Release => {
            if let HoldReason::Accountant { shortfall } = &held.reason {
                return Err(OperatorError::Accountant { id, shortfall: shortfall.clone() });
            }
            held.reason = HoldReason::Delay { until_ms: RELEASED };
            context.store.write(|tx| tx.hold(&held))?;
            info!(%id, amount = %held.amount, "held transfer released by an operator: signed at the next review");
        }
        Operator::Cancel => {
            context.store.write(|tx| {
                tx.unhold(&id)?;
                if let Some(mut record) = tx.get(&id)?
                    && applied(record.park("cancelled by an operator while held".into()))
                {
                    tx.put(&record)?;
                }
                Ok(())
            })?;
            warn!(%id, amount = %held.amount, "held transfer cancelled by an operator: never signed here");
        }
    }
    Ok(held)
}
