//! Early-warning alerts evaluated after each event: utilization thresholds (account and group) and behaviour changes.

use super::*;

impl Engine {
    pub(super) fn utilization_alerts(&mut self, cid: &str, cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let Some(terms) = self.terms(cid) else { return };
        let acc = self.accounts.get_mut(cid).expect("touched account exists");
        let exposure = acc.exposure_total();
        let seen = Some((exposure, terms.limit_effective));
        if acc.marks.utilization_seen.0 == seen {
            return;
        }
        acc.marks.utilization_seen.0 = seen;
        let util = warnings::utilization(exposure, terms.limit_effective);
        let crossed =
            warnings::threshold_crossings(&policy, &mut acc.marks.utilization_fired, util);
        let position = Position {
            util,
            exposure,
            limit: terms.limit_effective,
            currency: terms.currency,
            group: None,
        };
        self.threshold_alerts(&crossed, cid, &position, cause, out);
    }

    pub(super) fn group_utilization_alerts(
        &mut self,
        gid: &str,
        cid: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        let Some(view) = self.accounts.get(cid).and_then(|acc| self.group_view(acc)) else {
            return;
        };
        let Ok(exposure) = view.exposure else { return };
        let util = warnings::utilization(exposure, view.credit_limit);
        let Some(g) = self.groups.get_mut(gid) else {
            return;
        };
        let members = g.members.len();
        let fired_before = g.utilization_fired;
        let crossed = warnings::threshold_crossings(&policy, &mut g.utilization_fired, util);
        if g.utilization_fired != fired_before {
            self.changed_groups.insert(gid.to_string());
        }
        let position = Position {
            util,
            exposure,
            limit: view.credit_limit,
            currency: view.currency,
            group: Some((gid, members)),
        };
        self.threshold_alerts(&crossed, cid, &position, cause, out);
    }

    /// One alert per threshold crossed: the customer's, or its group's when `p` is the
    /// group's position.
    pub(super) fn threshold_alerts(
        &self,
        crossed: &[usize],
        cid: &str,
        p: &Position,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let (kind, group) = match p.group {
            Some(g) => (AlertKind::GroupUtilizationThreshold, Some(g)),
            None => (AlertKind::UtilizationThreshold, None),
        };
        for &i in crossed {
            let t = &self.policy.utilization_thresholds[i];
            let threshold = format_ratio(t.ratio);
            let mut details = vec![
                ("threshold", json!(threshold)),
                (
                    "utilization",
                    p.util
                        .map_or(json!("unbounded"), |u| json!(format_ratio(u))),
                ),
                ("exposure", money(p.exposure)),
                ("credit_limit", money(p.limit)),
                ("currency", json!(p.currency.as_str())),
                ("source_event_id", json!(cause.source)),
            ];
            if cause.fx {
                details.push(("cause", json!("fx")));
            }
            if let Some((_, members)) = group {
                details.push(("members", json!(members)));
            }
            let disc = format!("{threshold}|{}|{}", cause.source, cause.at.0);
            let alert = self.alert(
                kind,
                t.severity,
                Subject {
                    customer: cid,
                    group: group.map(|g| g.0),
                },
                cause.at,
                &disc,
                details,
            );
            out.push(Output::Alert(alert));
        }
    }

    /// Behavioural grade and limit suggestions, each edge-triggered (once per change).
    pub(super) fn behaviour_alerts(&mut self, cid: &str, cause: &Cause, out: &mut Vec<Output>) {
        let Some(profile) = self.accounts.get(cid).and_then(|a| a.profile.as_ref()) else {
            return;
        };
        let profile_grade = profile.grade.unwrap_or(self.policy.default_grade);
        let (limit, currency) = (profile.credit_limit, profile.currency);
        self.grade_alert(cid, profile_grade, cause, out);
        self.limit_suggestion_alerts(cid, limit, currency, cause, out);
    }

    /// `GRADE_CHANGE_SUGGESTED` when the behavioural grade first differs from the profile's
    /// (applied as an override when `apply_behavioural_grade` is set).
    fn grade_alert(
        &mut self,
        cid: &str,
        profile_grade: Grade,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        let now = self.now();
        // Built only when an alert fires (most events fire none).
        let disc = || format!("{}|{}", cause.source, cause.at.0);
        let acc = self.accounts.get_mut(cid).expect("exists");
        let grade =
            warnings::behavioural_grade_cached(&mut acc.behaviour, &policy, now, profile_grade);
        if let Some(ind) = grade {
            let suggested = ind.combined;
            if suggested == profile_grade {
                acc.behaviour.grade_suggested = None;
                if policy.apply_behavioural_grade {
                    acc.grade_override = None;
                }
            } else if acc.behaviour.grade_suggested != Some(suggested) {
                acc.behaviour.grade_suggested = Some(suggested);
                if policy.apply_behavioural_grade {
                    acc.grade_override = Some(suggested);
                }
                let severity = if suggested > profile_grade {
                    Severity::Warning
                } else {
                    Severity::Info
                };
                let alert = self.alert(
                    AlertKind::GradeChangeSuggested,
                    severity,
                    Subject::customer(cid),
                    cause.at,
                    &format!("{suggested}|{}", disc()),
                    vec![
                        ("current_grade", json!(profile_grade.as_str())),
                        ("suggested_grade", json!(suggested.as_str())),
                        ("applied", json!(policy.apply_behavioural_grade)),
                        (
                            "indicators",
                            json!({
                                "net_collection_rate": format_ratio(ind.net_collection_rate),
                                "collection_grade": ind.collection_grade.as_str(),
                                "avg_days_late": ind.avg_days_late.normalize().to_string(),
                                "timeliness_grade": ind.timeliness_grade.as_str(),
                                "profile_grade": ind.profile_grade.as_str(),
                                "amount_due": format_money(ind.amount_due),
                                "collected": format_money(ind.collected),
                                "window_days": policy.behaviour_window_days,
                            }),
                        ),
                    ],
                );
                out.push(Output::Alert(alert));
            }
        }
    }

    /// `LIMIT_DECREASE_SUGGESTED` when recent items were paid late on average, and
    /// `LIMIT_INCREASE_SUGGESTED` when they were paid on time while orders ran near the limit.
    fn limit_suggestion_alerts(
        &mut self,
        cid: &str,
        limit: Decimal,
        currency: Currency,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        // Built only when an alert fires (most events fire none).
        let disc = || format!("{}|{}", cause.source, cause.at.0);
        let s = &policy.limit_suggestions;
        let acc = self.accounts.get_mut(cid).expect("exists");
        let avg_late = warnings::recent_avg_days_late_cached(&mut acc.behaviour, s.settled_items);
        let decrease = avg_late.is_some_and(|a| a > s.decrease_avg_days_late_min);
        let near = acc.behaviour.near_limit.iter().filter(|n| **n).count();
        let increase = !decrease
            && avg_late.is_some_and(|a| a <= s.increase_avg_days_late_max)
            && near >= s.increase_near_limit_orders_min;
        let fire_decrease = decrease && !acc.behaviour.limit_decrease_active;
        let fire_increase = increase && !acc.behaviour.limit_increase_active;
        acc.behaviour.limit_decrease_active = decrease;
        acc.behaviour.limit_increase_active = increase;
        // Formatted only for an alert that fires (most events fire none).
        let avg = || avg_late.unwrap_or_default().normalize().to_string();
        if fire_decrease {
            let suggested = (limit - limit * s.decrease_pct / Decimal::ONE_HUNDRED).round_dp(2);
            let alert = self.alert(
                AlertKind::LimitDecreaseSuggested,
                Severity::Warning,
                Subject::customer(cid),
                cause.at,
                &disc(),
                vec![
                    ("avg_days_late", json!(avg())),
                    ("settled_items", json!(s.settled_items)),
                    (
                        "threshold_days",
                        json!(s.decrease_avg_days_late_min.normalize().to_string()),
                    ),
                    ("credit_limit", money(limit)),
                    ("suggested_limit", money(suggested)),
                    ("currency", json!(currency.as_str())),
                ],
            );
            out.push(Output::Alert(alert));
        }
        if fire_increase {
            let suggested = (limit + limit * s.increase_pct / Decimal::ONE_HUNDRED).round_dp(2);
            let alert = self.alert(
                AlertKind::LimitIncreaseSuggested,
                Severity::Info,
                Subject::customer(cid),
                cause.at,
                &disc(),
                vec![
                    ("avg_days_late", json!(avg())),
                    ("settled_items", json!(s.settled_items)),
                    ("near_limit_orders", json!(near)),
                    ("recent_orders", json!(s.increase_recent_orders)),
                    ("credit_limit", money(limit)),
                    ("suggested_limit", money(suggested)),
                    ("currency", json!(currency.as_str())),
                ],
            );
            out.push(Output::Alert(alert));
        }
    }
}
