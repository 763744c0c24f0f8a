//! What a delivery offers per gas: twice the base fee plus a tip, within the
//! destination's caps (`max_fee_per_gas_gwei`, `max_priority_fee_gwei`). Above the caps
//! a delivery waits rather than overpay; a stuck one is replaced only while the caps
//! leave room for the raise nodes require.

use crate::ChainConfig;

/// Priority fee of delivery transactions, unless capped lower.
pub(super) const TIP: u128 = 1_000_000_000;
const GWEI: u128 = 1_000_000_000;

/// A destination's fee caps, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FeePolicy {
    max_fee: Option<u128>,
    max_tip: Option<u128>,
}

/// The fees of one version of a delivery transaction, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fees {
    pub max_fee: u128,
    pub tip: u128,
}

/// Why a delivery waits: the chain's price and the cap it is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OverCap {
    pub price: u128,
    pub cap: u128,
}

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fees over the cap: {:.3} gwei a gas needed (base fee and tip), max_fee_per_gas_gwei is {}",
            self.price as f64 / GWEI as f64,
            self.cap / GWEI
        )
    }
}

impl FeePolicy {
    /// The caps `chain` configures.
    pub(super) fn new(chain: &ChainConfig) -> Self {
        let gwei = |v: Option<u64>| v.map(|g| u128::from(g) * GWEI);
        Self { max_fee: gwei(chain.max_fee_per_gas_gwei), max_tip: gwei(chain.max_priority_fee_gwei) }
    }

    fn tip(&self) -> u128 {
        self.max_tip.map_or(TIP, |cap| cap.min(TIP))
    }

    /// The fees of a new delivery when the chain's price (base fee, or the node's gas
    /// price) is `price`: room for the base fee to double, capped; or why it must wait.
    pub(super) fn offer(&self, price: u128) -> Result<Fees, OverCap> {
        let tip = self.tip();
        let wanted = price.saturating_mul(2).saturating_add(tip);
        match self.max_fee {
            Some(cap) if price.saturating_add(tip) > cap => Err(OverCap { price: price + tip, cap }),
            Some(cap) => Ok(Fees { max_fee: wanted.min(cap), tip }),
            None => Ok(Fees { max_fee: wanted, tip }),
        }
    }

    /// The fees a delivery is predicted with over a block with base fee `basefee`: its
    /// offer, or the caps themselves when the base fee is over them.
    pub(super) fn predicted(&self, basefee: u128) -> Fees {
        self.offer(basefee).unwrap_or_else(|over| Fees { max_fee: over.cap, tip: self.tip().min(over.cap) })
    }

    /// The fees of a replacement of a version that paid `fees`: a quarter more of each,
    /// within the caps; `None` when the caps leave less than the 10% raise nodes require
    /// of a replacement.
    pub(super) fn raise(&self, fees: Fees) -> Option<Fees> {
        let up = |v: u128| v.saturating_mul(5) / 4 + 1;
        let max_fee = self.max_fee.map_or(up(fees.max_fee), |cap| up(fees.max_fee).min(cap));
        let tip = self.max_tip.map_or(up(fees.tip), |cap| up(fees.tip).min(cap)).min(max_fee);
        let enough = |new: u128, old: u128| new > old + old / 10;
        (enough(max_fee, fees.max_fee) && enough(tip, fees.tip)).then_some(Fees { max_fee, tip })
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Address;

    use super::*;

    fn policy(max_fee: Option<u64>, max_tip: Option<u64>) -> FeePolicy {
        let mut chain = ChainConfig::new(1, "http://127.0.0.1:8545", Address::ZERO);
        (chain.max_fee_per_gas_gwei, chain.max_priority_fee_gwei) = (max_fee, max_tip);
        FeePolicy::new(&chain)
    }

    #[test]
    fn without_caps_a_delivery_offers_twice_the_price_and_a_gwei() {
        let fees = policy(None, None).offer(10 * GWEI).unwrap();
        assert_eq!(fees, Fees { max_fee: 21 * GWEI, tip: GWEI });
        assert_eq!(
            policy(None, None).raise(fees),
            Some(Fees { max_fee: 21 * GWEI * 5 / 4 + 1, tip: GWEI * 5 / 4 + 1 })
        );
    }

    #[test]
    fn a_cap_clamps_the_offer_and_a_price_over_it_waits() {
        let capped = policy(Some(15), None);
        assert_eq!(capped.offer(10 * GWEI).unwrap(), Fees { max_fee: 15 * GWEI, tip: GWEI });
        assert_eq!(capped.offer(14 * GWEI).unwrap().max_fee, 15 * GWEI, "price and tip fit exactly");
        let over = capped.offer(15 * GWEI).unwrap_err();
        assert_eq!(over, OverCap { price: 16 * GWEI, cap: 15 * GWEI });
        assert!(over.to_string().contains("max_fee_per_gas_gwei is 15"), "{over}");
    }

    #[test]
    fn a_replacement_is_raised_within_the_caps_or_not_at_all() {
        let capped = policy(Some(15), Some(1));
        let fees = capped.offer(5 * GWEI).unwrap();
        assert_eq!(fees, Fees { max_fee: 11 * GWEI, tip: GWEI });
        // The tip is at its cap: no replacement can raise it the 10% nodes require.
        assert_eq!(capped.raise(fees), None);
        let roomy = policy(Some(15), None);
        assert_eq!(roomy.raise(fees).unwrap().max_fee, 11 * GWEI * 5 / 4 + 1, "a quarter more, under the cap");
        let raised = roomy.raise(Fees { max_fee: 13 * GWEI, tip: GWEI }).unwrap();
        assert_eq!(raised.max_fee, 15 * GWEI, "clamped at the cap, still 10% more");
        assert_eq!(roomy.raise(raised), None, "at the cap: nothing left to raise");
    }

    #[test]
    fn a_lower_tip_cap_lowers_the_tip() {
        let fees = policy(None, Some(0)).offer(GWEI).unwrap();
        assert_eq!(fees, Fees { max_fee: 2 * GWEI, tip: 0 });
    }
}
