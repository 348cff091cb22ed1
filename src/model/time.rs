//! Event time: instants as microseconds since the Unix epoch (UTC), parsed from RFC 3339
//! timestamps with an offset or from RFC 3339 dates (a date means the start of that day, UTC),
//! and printed back in one canonical UTC form.
//!
//! The engine never reads a wall clock; time only enters through events and `advance_clock`.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use std::fmt;

/// Microseconds in one day.
pub const DAY_US: i64 = 86_400_000_000;

/// An instant in event time, microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses an RFC 3339 timestamp with offset (`2026-03-01T10:00:00Z`, `...+02:00`).
    /// The earliest time accepted: 1900-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-2_208_988_800_000_000);
    /// The latest time accepted: 2199-12-31T23:59:59.999999Z.
    pub const MAX: Timestamp = Timestamp(7_258_118_399_999_999);
    /// What an input's timestamp must be, for dead-letter texts.
    pub const ACCEPTED: &'static str =
        "an RFC 3339 timestamp with offset (e.g. 2026-03-01T10:00:00Z), from 1900-01-01T00:00:00Z to 2199-12-31T23:59:59Z";

    /// The wall clock (the shell's; the core never reads it).
    pub fn now() -> Timestamp {
        Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
        )
    }

    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let dt = DateTime::parse_from_rfc3339(text).ok()?;
        let us = dt.timestamp_micros();
        // Years 1900 to 2199: far inside i64, so that adding days or years never overflows.
        (Timestamp::MIN.0..=Timestamp::MAX.0)
            .contains(&us)
            .then_some(Timestamp(us))
    }

    /// Parses an RFC 3339 full date (`2026-03-01`) as the start of that day, UTC, or a timestamp.
    pub fn parse_date_or_timestamp(text: &str) -> Option<Timestamp> {
        if text.len() == 10 {
            let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            let us = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
            return (Timestamp::MIN.0..=Timestamp::MAX.0)
                .contains(&us)
                .then_some(Timestamp(us));
        }
        Self::parse_rfc3339(text)
    }

    pub fn plus_days(self, days: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(days.saturating_mul(DAY_US)))
    }

    pub fn plus_us(self, us: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(us))
    }

    /// Whole and fractional days from `earlier` to `self` as a decimal rounded to two places.
    pub fn days_since(self, earlier: Timestamp) -> rust_decimal::Decimal {
        let us = self.0.saturating_sub(earlier.0);
        (rust_decimal::Decimal::from(us) / rust_decimal::Decimal::from(DAY_US)).round_dp(2)
    }

    /// Canonical UTC text: `2026-03-01T10:00:00Z`, with a fraction only when there is one.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => self.0.to_string(),
        }
    }

    /// The calendar date (UTC) of this instant, `2026-03-01`.
    pub fn to_date(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(dt) => dt.format("%Y-%m-%d").to_string(),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Binary formats (changelog snapshots) carry the microseconds; JSON the RFC 3339 text.
        if !d.is_human_readable() {
            return <i64 as serde::Deserialize>::deserialize(d).map(Timestamp);
        }
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_i64(self.0);
        }
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_utc() {
        let t = Timestamp::parse_rfc3339("2026-03-01T12:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-01T10:00:00Z");
        let t = Timestamp::parse_rfc3339("2026-03-01T10:00:00.250Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-01T10:00:00.250Z");
        assert!(Timestamp::parse_rfc3339("2026-03-01 10:00").is_none());
        assert!(Timestamp::parse_rfc3339("2026-03-01T10:00:00").is_none());
    }

    #[test]
    fn dates_are_start_of_day_utc() {
        let d = Timestamp::parse_date_or_timestamp("2026-03-01").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-03-01T00:00:00Z");
        assert_eq!(d.plus_days(1).to_date(), "2026-03-02");
    }
}
