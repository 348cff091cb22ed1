//! Early-warning arithmetic: utilization and threshold crossings with hysteresis, the
//! behavioural grade (net collection rate x timeliness x the profile's grade, with a D veto),
//! days-late averages for limit suggestions, and medians for anomaly and inactivity.
//! Pure functions; the engine decides when to call them and emits the alerts.

use super::account::{Account, Behaviour, SettledItem, WindowFigures};
use crate::model::*;
use crate::policy::Policy;
use rust_decimal::Decimal;
use std::collections::VecDeque;

/// Median of a list of decimals, or of integers (mean of the middle two for an even count,
/// in decimal). Integers are selected as integers: a decimal comparison costs several times
/// more.
pub fn median<T: Ord + Copy + Into<Decimal>>(values: impl Iterator<Item = T>) -> Option<Decimal> {
    let mut v: Vec<T> = values.collect();
    if v.is_empty() {
        return None;
    }
    // Selection, not a sort: the median is needed on every order, the order of the rest never.
    let n = v.len();
    let (below, mid, _) = v.select_nth_unstable(n / 2);
    let mid = *mid;
    Some(if n % 2 == 1 {
        mid.into()
    } else {
        let lower = below.iter().copied().max().unwrap_or(mid);
        (lower.into() + mid.into()) / Decimal::TWO
    })
}

/// `median` of decimals, selected on integer keys: each value's mantissa brought to the
/// largest scale among them, where a `Decimal` comparison costs several times an integer one.
/// The same number as `median` (among equal values of different scales it may pick another
/// representation, which nothing downstream can tell: money is printed normalized and only
/// compared). Falls back to `median` when a key would reach 2^92 or the scale 28, where the
/// mean of the middle two could round.
pub fn median_decimal(values: &VecDeque<Decimal>) -> Option<Decimal> {
    const BOUND: i128 = 1 << 92;
    let scale = values.iter().map(|v| v.scale()).max()?;
    if scale >= 28 {
        return median(values.iter().copied());
    }
    let mut keyed: Vec<(i128, Decimal)> = Vec::with_capacity(values.len());
    for v in values {
        let key = 10i128
            .checked_pow(scale - v.scale())
            .and_then(|f| v.mantissa().checked_mul(f))
            .filter(|k| k.abs() < BOUND);
        match key {
            Some(k) => keyed.push((k, *v)),
            None => return median(values.iter().copied()),
        }
    }
    let n = keyed.len();
    let (below, mid, _) = keyed.select_nth_unstable_by_key(n / 2, |e| e.0);
    let mid = mid.1;
    Some(if n % 2 == 1 {
        mid
    } else {
        let lower = below.iter().max_by_key(|e| e.0).map_or(mid, |e| e.1);
        (lower + mid) / Decimal::TWO
    })
}

/// Utilization = exposure / limit. `None` means unbounded (exposure above a zero limit).
pub fn utilization(exposure: Decimal, limit: Decimal) -> Option<Decimal> {
    if limit > Decimal::ZERO {
        exposure.checked_div(limit)
    } else if exposure > Decimal::ZERO {
        None
    } else {
        Some(Decimal::ZERO)
    }
}

/// Updates the fired bits for a new utilization; returns the indexes of the thresholds crossed
/// upward now. A fired threshold re-arms once utilization falls `margin` below it.
pub fn threshold_crossings(policy: &Policy, fired: &mut u32, util: Option<Decimal>) -> Vec<usize> {
    let mut crossed = Vec::new();
    for (i, t) in policy.utilization_thresholds.iter().enumerate().take(32) {
        let bit = 1u32 << i;
        let at_or_above = util.is_none_or(|u| u >= t.ratio);
        if *fired & bit == 0 {
            if at_or_above {
                *fired |= bit;
                crossed.push(i);
            }
        } else if util.is_some_and(|u| u < t.ratio - policy.utilization_rearm_margin) {
            *fired &= !bit;
        }
    }
    crossed
}

/// The indicators behind a behavioural grade.
#[derive(Clone, Debug, PartialEq)]
pub struct GradeIndicators {
    pub amount_due: Decimal,
    pub collected: Decimal,
    pub net_collection_rate: Decimal,
    pub collection_grade: Grade,
    pub avg_days_late: Decimal,
    pub timeliness_grade: Grade,
    pub profile_grade: Grade,
    pub combined: Grade,
}

fn collection_grade(rate: Decimal) -> Grade {
    if rate >= Decimal::ONE {
        Grade::A
    } else if rate >= Decimal::new(95, 2) {
        Grade::B
    } else if rate >= Decimal::new(90, 2) {
        Grade::C
    } else {
        Grade::D
    }
}

fn timeliness_grade(avg_days_late: Decimal) -> Grade {
    if avg_days_late <= Decimal::ZERO {
        Grade::A
    } else if avg_days_late < Decimal::from(5) {
        Grade::B
    } else if avg_days_late < Decimal::from(10) {
        Grade::C
    } else {
        Grade::D
    }
}

/// Combines three letters as the grading seeds prescribe: any D vetoes; AAA/AAB -> A;
/// ABB/BBB -> B; BBC/BCC/CCC -> C; the unlisted mixes AAC -> B, ABC -> B, ACC -> C.
pub fn combine_grades(mut letters: [Grade; 3]) -> Grade {
    letters.sort();
    use Grade::*;
    match letters {
        [_, _, D] => D,
        [A, A, A] | [A, A, B] => A,
        [A, B, B] | [B, B, B] | [A, A, C] | [A, B, C] => B,
        _ => C,
    }
}

/// The behavioural grade summed afresh: the property test's reference for
/// `behavioural_grade_cached`, which the engine uses.
#[cfg(test)]
pub fn behavioural_grade(
    account: &Account,
    policy: &Policy,
    now: Timestamp,
    profile_grade: Grade,
) -> Option<GradeIndicators> {
    let f = window_figures(
        &account.behaviour.settled,
        policy.behaviour_window_days,
        now,
    );
    f.figures.map(|f| indicators(f, profile_grade))
}

/// The behavioural grade from the recently settled receivables: items settled so far whose
/// due date falls within the policy window before `now` (DOMAIN.md). Open items do not count
/// here: while unpaid they are the overdue rules' and aging alerts' business, and counting a
/// just-due item as "0% collected" would swing the grade on noise. `None` until an item counts.
///
/// The window's figures are kept with the account and reused while no item can enter or leave
/// the window (the sums and divisions are then skipped; a property test holds the result equal
/// to a fresh sum).
pub fn behavioural_grade_cached(
    behaviour: &mut Behaviour,
    policy: &Policy,
    now: Timestamp,
    profile_grade: Grade,
) -> Option<GradeIndicators> {
    let days = policy.behaviour_window_days;
    let reuse = behaviour
        .derived
        .window
        .filter(|f| f.window_days == days && f.from <= now.0 && now.0 < f.until);
    let f = match reuse {
        Some(f) => f,
        None => {
            let f = window_figures(&behaviour.settled, days, now);
            behaviour.derived.window = Some(f);
            f
        }
    };
    f.figures.map(|f| indicators(f, profile_grade))
}

fn indicators(
    (due, paid, rate, avg_late): (Decimal, Decimal, Decimal, Decimal),
    profile_grade: Grade,
) -> GradeIndicators {
    let collection = collection_grade(rate);
    let timeliness = timeliness_grade(avg_late);
    GradeIndicators {
        amount_due: due,
        collected: paid,
        net_collection_rate: rate,
        collection_grade: collection,
        avg_days_late: avg_late,
        timeliness_grade: timeliness,
        profile_grade,
        combined: combine_grades([collection, timeliness, profile_grade]),
    }
}

/// The window's sums at `now` (items due in `now - days ..= now`), and the span of moments
/// around `now` in which the same items are inside it.
fn window_figures(settled: &VecDeque<SettledItem>, days: u32, now: Timestamp) -> WindowFigures {
    let since = now.plus_days(-i64::from(days));
    let width = i64::from(days).checked_mul(DAY_US);
    // The span is exact only where `now - width` does not saturate; otherwise it is `now` alone.
    let exact = width.is_some_and(|w| now.0.checked_sub(w).is_some());
    let (mut from, mut until) = match width {
        Some(w) if exact => (i64::MIN + w, i64::MAX),
        _ => (now.0, now.0.saturating_add(1)),
    };
    let mut due = Decimal::ZERO;
    let mut paid = Decimal::ZERO;
    let mut late_weighted = Decimal::ZERO;
    for s in settled {
        if s.due_at >= since && s.due_at <= now {
            due += s.amount;
            paid += s.paid;
            late_weighted += s.late_weighted;
        }
        let d = s.due_at.0;
        // Inside the window for every moment in d ..= d + width.
        match width.and_then(|w| d.checked_add(w)) {
            Some(leaves) if exact => {
                if now.0 < d {
                    until = until.min(d);
                } else if now.0 <= leaves {
                    from = from.max(d);
                    until = until.min(leaves.saturating_add(1));
                } else {
                    from = from.max(leaves + 1);
                }
            }
            _ => {
                from = now.0;
                until = now.0.saturating_add(1);
            }
        }
    }
    let figures = (due > Decimal::ZERO).then(|| {
        let rate = (paid / due).round_dp(4);
        let avg_late = if paid > Decimal::ZERO {
            (late_weighted / paid).round_dp(2)
        } else {
            Decimal::ZERO
        };
        (due, paid, rate, avg_late)
    });
    WindowFigures {
        window_days: days,
        from,
        until,
        figures,
    }
}

/// The recent days-late average worked out afresh: the property test's reference for
/// `recent_avg_days_late_cached`.
#[cfg(test)]
pub fn recent_avg_days_late(account: &Account, n: usize) -> Option<Decimal> {
    recent_late(&account.behaviour.settled, n)
}

/// Amount-weighted average days late over the last `n` settled items that were paid; `None`
/// until `n` such items exist. Derived once per change to the settled items.
pub fn recent_avg_days_late_cached(behaviour: &mut Behaviour, n: usize) -> Option<Decimal> {
    match behaviour.derived.recent_late {
        Some((k, v)) if k == n => v,
        _ => {
            let v = recent_late(&behaviour.settled, n);
            behaviour.derived.recent_late = Some((n, v));
            v
        }
    }
}

fn recent_late(settled: &VecDeque<SettledItem>, n: usize) -> Option<Decimal> {
    let items: Vec<_> = settled
        .iter()
        .rev()
        .filter(|s| s.paid > Decimal::ZERO)
        .take(n)
        .collect();
    if n == 0 || items.len() < n {
        return None;
    }
    let paid: Decimal = items.iter().map(|s| s.paid).sum();
    let late: Decimal = items.iter().map(|s| s.late_weighted).sum();
    Some((late / paid).round_dp(2))
}

/// When an INACTIVITY alert is due: the last order time plus the median of the recent gaps
/// between orders plus the extra days, once enough gaps are known.
pub fn inactivity_due(account: &Account, policy: &Policy) -> Option<(Timestamp, Decimal)> {
    let usual_us = usual_gap_us(account, policy)?;
    let due = inactivity_moment(account, policy, usual_us)?;
    Some((due, (usual_us / Decimal::from(DAY_US)).round_dp(2)))
}

/// The moment of [`inactivity_due`] alone (what scheduling needs; the usual gap in days is
/// worked out only for the alert).
pub fn inactivity_due_at(account: &Account, policy: &Policy) -> Option<Timestamp> {
    inactivity_moment(account, policy, usual_gap_us(account, policy)?)
}

/// The median gap between the customer's recent orders, in microseconds; `None` until there are
/// `inactivity_min_gaps` gaps.
fn usual_gap_us(account: &Account, policy: &Policy) -> Option<Decimal> {
    let times = &account.behaviour.order_times;
    if times.len() < policy.inactivity_min_gaps + 1 || policy.inactivity_min_gaps == 0 {
        return None;
    }
    let gaps = times
        .iter()
        .zip(times.iter().skip(1))
        .map(|(a, b)| b.0 - a.0);
    median(gaps)
}

/// The last order plus the usual gap plus `inactivity_extra_days`.
fn inactivity_moment(account: &Account, policy: &Policy, usual_us: Decimal) -> Option<Timestamp> {
    let usual_us_i = i64::try_from(usual_us.trunc().mantissa()).ok()?;
    let last = *account.behaviour.order_times.back()?;
    Some(
        last.plus_us(usual_us_i)
            .plus_days(i64::from(policy.inactivity_extra_days)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Grade::*;

    #[test]
    fn grade_combinations_follow_the_seeds() {
        let cases = [
            ([A, A, A], A),
            ([A, B, A], A),
            ([B, A, B], B),
            ([B, B, B], B),
            ([C, B, B], C),
            ([B, C, C], C),
            ([C, C, C], C),
            ([A, A, C], B),
            ([C, B, A], B),
            ([A, C, C], C),
            ([A, A, D], D),
            ([D, C, B], D),
        ];
        for (letters, want) in cases {
            assert_eq!(combine_grades(letters), want, "{letters:?}");
        }
    }

    #[test]
    fn medians() {
        let d = |v: i64| Decimal::from(v);
        assert_eq!(median([d(3), d(1), d(2)].into_iter()), Some(d(2)));
        assert_eq!(
            median([d(4), d(1), d(2), d(3)].into_iter()),
            Some(Decimal::new(25, 1))
        );
        assert_eq!(median(std::iter::empty::<Decimal>()), None);
        for v in [vec![5, -3, 7, 7, 1], vec![4, 1, 2, 3], vec![9], vec![2, 3]] {
            assert_eq!(
                median(v.iter().copied()),
                median(v.iter().map(|x| d(*x))),
                "{v:?}: integers give what their decimals give"
            );
        }
        assert_eq!(median(std::iter::empty::<i64>()), None);
    }

    #[test]
    fn thresholds_rearm_with_hysteresis() {
        let p = Policy::default();
        let mut fired = 0;
        let r = |v: i64| Some(Decimal::new(v, 2));
        assert_eq!(threshold_crossings(&p, &mut fired, r(90)), vec![0, 1]);
        assert!(threshold_crossings(&p, &mut fired, r(84)).is_empty());
        assert!(
            threshold_crossings(&p, &mut fired, r(90)).is_empty(),
            "84 is not 5 points below 85"
        );
        assert!(threshold_crossings(&p, &mut fired, r(79)).is_empty());
        assert_eq!(threshold_crossings(&p, &mut fired, r(86)), vec![1]);
        assert_eq!(threshold_crossings(&p, &mut fired, None), vec![2]);
    }

    /// A step of the cache property: settle an item due at `due` (days from the start, with
    /// amounts in cents), or look at the grade `at` (days from the start, any fraction).
    #[derive(Clone, Debug)]
    enum Step {
        Settle { due: i64, amount: i64, paid: i64 },
        Look { at: i64 },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (-200i64..400, 1i64..1_000_000, 0i64..1_000_000)
                .prop_map(|(due, amount, paid)| Step::Settle { due, amount, paid }),
            (-200i64 * DAY_US..600 * DAY_US).prop_map(|at| Step::Look { at }),
            // Moments where the window's arithmetic saturates.
            prop_oneof![Just(i64::MIN), Just(i64::MIN + 1), Just(i64::MAX)]
                .prop_map(|at| Step::Look { at }),
        ]
    }

    proptest::proptest! {
        /// The cached grade and days-late figures equal the ones summed afresh, whatever the
        /// order of settlements and looks (the clock may also go back here).
        #[test]
        fn cached_figures_equal_fresh_ones(
            steps in proptest::collection::vec(step(), 1..80),
            window in proptest::prop_oneof![proptest::strategy::Just(0u32), 1u32..200, proptest::strategy::Just(u32::MAX)],
        ) {
            let start = Timestamp(1_767_225_600_000_000);
            let policy = Policy { behaviour_window_days: window, ..Policy::default() };
            let mut acc = Account::new("C-1");
            for (i, s) in steps.into_iter().enumerate() {
                match s {
                    Step::Settle { due, amount, paid } => {
                        acc.behaviour.derived = Default::default();
                        acc.behaviour.settled.push_back(SettledItem {
                            shipment_id: format!("S-{i}"),
                            amount: Decimal::new(amount, 2),
                            paid: Decimal::new(paid.min(amount), 2),
                            credited: Decimal::ZERO,
                            late_weighted: Decimal::new(paid.min(amount) * (due % 7), 2),
                            due_at: start.plus_days(due),
                            settled_at: start,
                        });
                    }
                    Step::Look { at } => {
                        let now = if at == i64::MIN || at == i64::MIN + 1 || at == i64::MAX {
                            Timestamp(at)
                        } else {
                            start.plus_us(at)
                        };
                        let fresh = behavioural_grade(&acc, &policy, now, B);
                        let cached = behavioural_grade_cached(&mut acc.behaviour, &policy, now, B);
                        proptest::prop_assert_eq!(cached, fresh);
                        let fresh = recent_avg_days_late(&acc, 3);
                        let cached = recent_avg_days_late_cached(&mut acc.behaviour, 3);
                        proptest::prop_assert_eq!(cached, fresh);
                    }
                }
            }
        }

        /// The median selected on integer keys is the decimal median's number, and prints as
        /// it does, for one scale or several, negatives and large mantissas included.
        #[test]
        fn median_decimal_equals_median(
            values in proptest::collection::vec(
                (proptest::prop_oneof![-10i64..1_000_000_000, proptest::num::i64::ANY], 0u32..8),
                1..40,
            ),
            one_scale in proptest::bool::ANY,
        ) {
            let values: VecDeque<Decimal> = values
                .into_iter()
                .map(|(m, s)| Decimal::new(m, if one_scale { 2 } else { s }))
                .collect();
            let fast = median_decimal(&values);
            let reference = median(values.iter().copied());
            proptest::prop_assert_eq!(fast, reference);
            proptest::prop_assert_eq!(fast.map(format_money), reference.map(format_money));
        }
    }
}
