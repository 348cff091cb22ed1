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
        if let Some(t) = parse_utc_seconds(text) {
            return Some(t);
        }
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
        if let Some(text) = format_utc_seconds(self) {
            return text;
        }
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

// The common case by hand: `YYYY-MM-DDTHH:MM:SSZ`, whole seconds in UTC, the form nearly every
// event carries and every output prints. chrono decides everything else (offsets, fractions,
// leap seconds, lower-case separators, out-of-range fields), and property tests hold the two
// paths equal. chrono's parse and print are several times the cost of the arithmetic.

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` with every field in range, else `None` (chrono decides).
fn parse_utc_seconds(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() != 20
        || [b[4], b[7], b[10], b[13], b[16], b[19]] != [b'-', b'-', b'T', b':', b':', b'Z']
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let us = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + s;
    let us = us * 1_000_000;
    (Timestamp::MIN.0..=Timestamp::MAX.0)
        .contains(&us)
        .then_some(Timestamp(us))
}

/// `to_rfc3339` for a whole second of years 1000 to 9999, else `None` (chrono prints it).
fn format_utc_seconds(t: Timestamp) -> Option<String> {
    if t.0 % 1_000_000 != 0 {
        return None;
    }
    let secs = t.0 / 1_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    if !(1000..=9999).contains(&y) {
        return None;
    }
    let mut out = [0u8; 20];
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, mo);
    put(8, 2, d);
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        out[i] = c;
    }
    // Digits and separators only: ASCII.
    Some(out.iter().map(|&c| char::from(c)).collect())
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

    fn chrono_parse(text: &str) -> Option<Timestamp> {
        let us = DateTime::parse_from_rfc3339(text).ok()?.timestamp_micros();
        (Timestamp::MIN.0..=Timestamp::MAX.0)
            .contains(&us)
            .then_some(Timestamp(us))
    }

    fn chrono_print(t: Timestamp) -> String {
        DateTime::<Utc>::from_timestamp_micros(t.0)
            .map(|dt| dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| t.0.to_string())
    }

    #[test]
    fn hand_path_edges_agree_with_chrono() {
        for text in [
            "1900-01-01T00:00:00Z",
            "1899-12-31T23:59:59Z",
            "2199-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "2024-02-29T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2100-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01t10:00:00z",
            "2026-01-01T1a:00:00Z",
            "+026-01-01T10:00:00Z",
            "1970-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(text), chrono_parse(text), "{text}");
        }
        for us in [
            0,
            Timestamp::MIN.0,
            Timestamp::MAX.0,
            -1,
            1,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                Timestamp(us).to_rfc3339(),
                chrono_print(Timestamp(us)),
                "{us}"
            );
        }
    }

    proptest::proptest! {
        /// Any instant chrono can print, at whole seconds and not: the hand path prints it as
        /// chrono does, and parses the text back as chrono does.
        #[test]
        fn hand_path_agrees_with_chrono(
            secs in -2_300_000_000i64..7_400_000_000,
            frac in proptest::prop_oneof![proptest::strategy::Just(0i64), 0i64..1_000_000],
        ) {
            let t = Timestamp(secs * 1_000_000 + frac);
            let text = t.to_rfc3339();
            proptest::prop_assert_eq!(&text, &chrono_print(t));
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&text), chrono_parse(&text));
        }

        /// Any twenty bytes shaped like a timestamp, in range or not.
        #[test]
        fn hand_parse_agrees_with_chrono(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..26, mi in 0u32..62, s in 0u32..62,
        ) {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&text), chrono_parse(&text));
        }
    }

    #[test]
    fn dates_are_start_of_day_utc() {
        let d = Timestamp::parse_date_or_timestamp("2026-03-01").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-03-01T00:00:00Z");
        assert_eq!(d.plus_days(1).to_date(), "2026-03-02");
    }
}
