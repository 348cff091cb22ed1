//! Live FX (CONTRACT.md, "Foreign currencies"): the rates an engine converts with. Rates from
//! `policy.fx_rates` are the starting values; `fx.rate` quotes replace them, the latest
//! `occurred_at` winning per pair (a late, older quote changes nothing) and the reverse pair
//! derived from the same quote. There are no cross rates through a third currency.
//! Conversions round half-even to 4 decimal places.

use crate::model::{Currency, FxQuote, Timestamp};
use crate::policy::Policy;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Decimal places of a converted amount.
pub const CONVERTED_DP: u32 = 4;

/// One live quote: 1 `base` = `rate` `quote`, as of `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub base: Currency,
    pub quote: Currency,
    #[serde(with = "crate::model::money::dec")]
    pub rate: Decimal,
    pub at: Timestamp,
}

/// The rates of one engine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FxRates {
    /// `policy.fx_rates`, used for a pair no quote has named yet.
    configured: BTreeMap<(Currency, Currency), Decimal>,
    /// Live quotes by pair, the pair in currency order (one entry serves both directions).
    live: BTreeMap<(Currency, Currency), Quote>,
}

fn pair(a: Currency, b: Currency) -> (Currency, Currency) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl FxRates {
    pub fn from_policy(policy: &Policy) -> FxRates {
        FxRates {
            configured: policy.fx_rates.clone(),
            live: BTreeMap::new(),
        }
    }

    /// Takes a quote unless a newer one for the pair is known (`None`: stale, changes
    /// nothing). `Some(true)` when the rate in force changed.
    pub fn apply(&mut self, q: &FxQuote, at: Timestamp) -> Option<bool> {
        let key = pair(q.base, q.quote);
        if self.live.get(&key).is_some_and(|old| old.at > at) {
            return None;
        }
        let new = Quote {
            base: q.base,
            quote: q.quote,
            rate: q.rate,
            at,
        };
        let before = self.multiplier(q.base, q.quote);
        self.live.insert(key, new);
        Some(before != self.multiplier(q.base, q.quote))
    }

    /// How `from` converts to `to`: `Mul(r)` or `Div(r)` by the quote that names the pair.
    fn rule(&self, from: Currency, to: Currency) -> Option<(bool, Decimal)> {
        if let Some(q) = self.live.get(&pair(from, to)) {
            return Some((q.base == from, q.rate));
        }
        if let Some(r) = self.configured.get(&(from, to)) {
            return Some((true, *r));
        }
        self.configured.get(&(to, from)).map(|r| (false, *r))
    }

    /// `amount` in `from` expressed in `to`, rounded half-even to 4 places; `None` without a
    /// rate between the two.
    pub fn convert(&self, amount: Decimal, from: Currency, to: Currency) -> Option<Decimal> {
        if from == to {
            return Some(amount);
        }
        let (multiply, rate) = self.rule(from, to)?;
        let v = if multiply {
            amount.checked_mul(rate)?
        } else {
            if rate.is_zero() {
                return None;
            }
            amount.checked_div(rate)?
        };
        Some(v.round_dp(CONVERTED_DP))
    }

    /// The rate applied from `from` to `to` (what a decision shows as `fx_rate`): the quote
    /// itself, or its inverse to 10 places for the reverse direction.
    pub fn multiplier(&self, from: Currency, to: Currency) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        match self.rule(from, to)? {
            (true, r) => Some(r),
            (false, r) if r.is_zero() => None,
            (false, r) => Decimal::ONE
                .checked_div(r)
                .map(|v| v.round_dp(10).normalize()),
        }
    }

    /// The live quotes (what a checkpoint keeps), in pair order.
    pub fn live(&self) -> Vec<Quote> {
        self.live.values().copied().collect()
    }

    /// The engine's rates, including live ones, for a restored engine.
    pub fn set_live(&mut self, quotes: &[Quote]) {
        self.live.clear();
        self.restore(quotes);
    }

    /// Puts checkpointed quotes back.
    pub fn restore(&mut self, quotes: &[Quote]) {
        for q in quotes {
            let key = pair(q.base, q.quote);
            if self.live.get(&key).is_none_or(|old| old.at <= q.at) {
                self.live.insert(key, *q);
            }
        }
    }
}

impl crate::engine::Engine {
    /// `fx.rate`: a newer quote replaces the pair's rate; every account with items in one of
    /// the two currencies and its amounts in the other is revalued and its holds re-checked.
    pub(super) fn on_fx_rate(
        &mut self,
        event: &crate::model::Event,
        q: &FxQuote,
        cause: &super::Cause,
        out: &mut Vec<crate::model::Output>,
    ) -> super::Outcome {
        let Some(changed) = self.rates.apply(q, event.occurred_at) else {
            return super::Outcome::Duplicate;
        };
        self.rates_changed = true;
        if !changed {
            return super::Outcome::Applied;
        }
        let mut affected: Vec<String> = self
            .accounts
            .values()
            .filter(|a| match a.currency {
                Some(c) if c == q.base => a.holds_currency(q.quote),
                Some(c) if c == q.quote => a.holds_currency(q.base),
                _ => false,
            })
            .map(|a| a.customer_id.clone())
            .collect();
        affected.sort_unstable();
        for cid in &affected {
            let Some(account) = self.accounts.get(cid).and_then(|a| a.currency) else {
                continue;
            };
            let conv = super::account::Conv {
                rates: &self.rates,
                account,
            };
            if let Some(acc) = self.accounts.get_mut(cid) {
                acc.revalue(&conv);
            }
            self.touch(cid);
        }
        for cid in &affected {
            self.recheck_holds(cid, cause, out);
        }
        super::Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(s: &str) -> Currency {
        Currency::parse(s).unwrap()
    }

    fn quote(base: &str, q: &str, rate: &str) -> FxQuote {
        FxQuote {
            base: cur(base),
            quote: cur(q),
            rate: rate.parse().unwrap(),
            key: format!("fx/{base}/{q}"),
        }
    }

    #[test]
    fn the_latest_quote_wins_and_the_reverse_is_derived() {
        let mut policy = Policy::default();
        policy
            .fx_rates
            .insert((cur("USD"), cur("EUR")), "0.90".parse().unwrap());
        let mut r = FxRates::from_policy(&policy);
        let (eur, usd) = (cur("EUR"), cur("USD"));
        assert_eq!(
            r.convert("100".parse().unwrap(), usd, eur),
            Some("90.00".parse().unwrap())
        );
        assert_eq!(
            r.apply(&quote("EUR", "USD", "1.25"), Timestamp(10)),
            Some(true)
        );
        assert_eq!(
            r.convert("100".parse().unwrap(), usd, eur),
            Some("80".parse().unwrap())
        );
        assert_eq!(
            r.convert("100".parse().unwrap(), eur, usd),
            Some("125".parse().unwrap())
        );
        assert_eq!(r.multiplier(usd, eur), Some("0.8".parse().unwrap()));
        // An older quote arriving late changes nothing; a newer one replaces.
        assert_eq!(r.apply(&quote("USD", "EUR", "0.5"), Timestamp(5)), None);
        assert_eq!(
            r.convert("100".parse().unwrap(), usd, eur),
            Some("80".parse().unwrap())
        );
        assert_eq!(
            r.apply(&quote("USD", "EUR", "0.5"), Timestamp(20)),
            Some(true)
        );
        assert_eq!(
            r.apply(&quote("USD", "EUR", "0.5"), Timestamp(21)),
            Some(false),
            "the same rate again"
        );
        assert_eq!(
            r.convert("3".parse().unwrap(), eur, usd),
            Some("6".parse().unwrap())
        );
        // No cross rates.
        assert_eq!(r.convert(Decimal::ONE, cur("GBP"), usd), None);
        // Half-even to four places.
        r.apply(&quote("EUR", "CHF", "0.00005"), Timestamp(30));
        assert_eq!(
            r.convert(Decimal::ONE, eur, cur("CHF")),
            Some(Decimal::ZERO),
            "0.00005 rounds to even"
        );
        assert_eq!(
            r.convert("3".parse().unwrap(), eur, cur("CHF")),
            Some("0.0002".parse().unwrap()),
            "0.00015 rounds to even"
        );
    }
}
