//! Exact money: amounts are `rust_decimal::Decimal`, parsed from JSON strings or numbers without
//! ever passing through binary floating point, and printed in one canonical form so that replay
//! output is byte-identical across runs.
//!
//! Contract limits (CONTRACT.md): at most 4 decimal places, absolute value below 10^15.

use rust_decimal::prelude::*;
use std::fmt;

/// Largest number of decimal places an input amount may carry.
pub const AMOUNT_SCALE_MAX: u32 = 4;

/// An ISO 4217 currency code: three upper-case ASCII letters, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a currency code; `None` unless it is exactly three upper-case ASCII letters.
    pub fn parse(code: &str) -> Option<Currency> {
        let bytes = code.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Some(Currency([bytes[0], bytes[1], bytes[2]]))
        } else {
            None
        }
    }

    /// Parses an input's currency code: an active ISO 4217 code (`parse` accepts any three
    /// upper-case letters, as snapshots written before this check may hold them).
    pub fn parse_iso(code: &str) -> Option<Currency> {
        Currency::parse(code).filter(|_| ISO_4217.binary_search(&code).is_ok())
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

/// Active ISO 4217 alphabetic codes (the list of 2025, funds and precious metals included),
/// sorted for binary search.
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let code = <[u8; 3] as serde::Deserialize>::deserialize(d)?;
            return std::str::from_utf8(&code)
                .ok()
                .and_then(Currency::parse)
                .ok_or_else(|| serde::de::Error::custom("invalid binary currency"));
        }
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid currency {s:?}")))
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return serde::Serialize::serialize(&self.0, s);
        }
        s.serialize_str(self.as_str())
    }
}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    NotANumber,
    TooManyDecimals,
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::NotANumber => f.write_str("is not a decimal number"),
            AmountError::TooManyDecimals => {
                write!(f, "has more than {AMOUNT_SCALE_MAX} decimal places")
            }
            AmountError::TooLarge => f.write_str("is not below 10^15 in absolute value"),
        }
    }
}

/// Parses the text of a decimal amount (`"1250.00"`, `1250`, `1.25e3`), exactly.
///
/// Accepts the JSON number grammar (optionally signed, fraction, exponent). The value must
/// have at most [`AMOUNT_SCALE_MAX`] significant decimal places (trailing zeros beyond that are
/// allowed: `"1.50000"` is 1.5) and an absolute value below 10^15.
pub fn parse_amount(text: &str) -> Result<Decimal, AmountError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 || !is_json_number(text) {
        return Err(AmountError::NotANumber);
    }
    let value = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).map_err(|_| AmountError::TooLarge)?
    } else {
        Decimal::from_str_exact(text).map_err(|e| match e {
            rust_decimal::Error::Underflow => AmountError::TooManyDecimals,
            _ => AmountError::TooLarge,
        })?
    };
    let value = value.normalize();
    if value.scale() > AMOUNT_SCALE_MAX {
        return Err(AmountError::TooManyDecimals);
    }
    if value.abs() >= Decimal::from(1_000_000_000_000_000i64) {
        return Err(AmountError::TooLarge);
    }
    Ok(value)
}

/// The JSON number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
/// A leading `+` or a bare `.5` are refused, as JSON refuses them.
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start || i - exp_start > 3 {
            return false;
        }
    }
    i == b.len()
}

/// Canonical money text: at least two decimal places, more only when the value has them
/// (`5000` -> `"5000.00"`, `12.3456` -> `"12.3456"`).
///
/// Written digit by digit from the mantissa: this runs several times for every decision and
/// alert, and `Decimal`'s `Display` costs several times more. `format_money_reference` is the
/// definition (normalize, at least two places, no `-0.00`); a property test holds them equal.
pub fn format_money(value: Decimal) -> String {
    let mut m = value.mantissa().unsigned_abs();
    let mut scale = value.scale();
    while scale > 2 && m % 10 == 0 {
        m /= 10;
        scale -= 1;
    }
    if scale < 2 {
        m *= 10u128.pow(2 - scale);
        scale = 2;
        if m >= 1 << 96 {
            // Beyond a decimal's 96-bit mantissa: `rescale` decides what is printed.
            return format_money_reference(value);
        }
    }
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut written = 0;
    // Digits by u64 arithmetic while the rest fits (u128 division is a library call).
    let next_digit = |m: &mut u128| -> u8 {
        let d = match u64::try_from(*m) {
            Ok(small) => {
                *m = u128::from(small / 10);
                (small % 10) as u8
            }
            Err(_) => {
                let d = (*m % 10) as u8;
                *m /= 10;
                d
            }
        };
        b'0' + d
    };
    // `scale` is at least 2 here, so the point always has a digit on each side.
    while m > 0 || written <= scale {
        if written == scale {
            at -= 1;
            digits[at] = b'.';
        }
        at -= 1;
        digits[at] = next_digit(&mut m);
        written += 1;
    }
    let mut out = String::with_capacity(digits.len() - at + 1);
    // No "-0.00".
    if value.is_sign_negative() && !value.is_zero() {
        out.push('-');
    }
    // Every byte is an ASCII digit or the point.
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
    out
}

/// What `format_money` prints, by way of `Decimal`'s own operations.
pub fn format_money_reference(value: Decimal) -> String {
    let mut v = value.normalize();
    if v.scale() < 2 {
        v.rescale(2);
    }
    if v.is_zero() {
        // Avoid "-0.00".
        v.set_sign_positive(true);
    }
    v.to_string()
}

/// A ratio (utilization, thresholds, rates) rounded half away from zero to four places,
/// printed with at least two decimal places (`0.85` -> `"0.85"`, `0.87314` -> `"0.8731"`).
pub fn format_ratio(value: Decimal) -> String {
    format_money(round_ratio(value))
}

/// Rounds a ratio to four places, half away from zero.
pub fn round_ratio(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero)
}

/// Serializes a `Decimal` as canonical money text.
pub fn ser_money<S: serde::Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_money(*v))
}

/// Serializes an optional `Decimal` as canonical money text or `null`.
pub fn ser_money_opt<S: serde::Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&format_money(*v)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_amount("1250.00").unwrap(), Decimal::new(125000, 2));
        assert_eq!(parse_amount("0.1").unwrap(), Decimal::new(1, 1));
        assert_eq!(parse_amount("1.25e3").unwrap(), Decimal::from(1250));
        assert_eq!(parse_amount("1.50000").unwrap(), Decimal::new(15, 1));
        assert_eq!(parse_amount("-3").unwrap(), Decimal::from(-3));
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(parse_amount("12.345678"), Err(AmountError::TooManyDecimals));
        assert_eq!(parse_amount("1e15"), Err(AmountError::TooLarge));
        assert_eq!(
            parse_amount("999999999999999.9999").unwrap().to_string(),
            "999999999999999.9999"
        );
        assert_eq!(parse_amount("1000000000000000"), Err(AmountError::TooLarge));
        for bad in [
            "", "abc", "1.", ".5", "+1", "01", "1e", "NaN", "1e99999", "0x10", "1,5",
        ] {
            assert_eq!(parse_amount(bad), Err(AmountError::NotANumber), "{bad}");
        }
        assert!(parse_amount("1e-9").is_err());
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_money(Decimal::from(5000)), "5000.00");
        assert_eq!(format_money(Decimal::new(123456, 4)), "12.3456");
        assert_eq!(format_money(Decimal::new(-0, 2)), "0.00");
        assert_eq!(format_ratio(Decimal::new(87314, 5)), "0.8731");
        assert_eq!(format_ratio(Decimal::new(85, 2)), "0.85");
    }

    #[test]
    fn currency_codes() {
        assert!(Currency::parse("EUR").is_some());
        assert!(Currency::parse("eur").is_none());
        assert!(Currency::parse("EURO").is_none());
    }

    proptest::proptest! {
        /// The digit-by-digit money text is `Decimal`'s, for every sign, scale and size.
        #[test]
        fn format_money_is_the_reference(
            lo in proptest::num::u32::ANY,
            mid in proptest::num::u32::ANY,
            hi in proptest::prop_oneof![proptest::strategy::Just(0u32), 0u32..16, proptest::num::u32::ANY],
            negative in proptest::bool::ANY,
            scale in 0u32..=28,
        ) {
            let v = Decimal::from_parts(lo, mid, hi, negative, scale);
            proptest::prop_assert_eq!(format_money(v), format_money_reference(v));
        }
    }

    #[test]
    fn formats_edges_like_the_reference() {
        for v in [
            Decimal::ZERO,
            Decimal::from_parts(0, 0, 0, true, 5),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(5, 3),
            Decimal::new(-5, 3),
            Decimal::new(500, 2),
            Decimal::new(5000, 0),
            Decimal::new(1, 28),
        ] {
            assert_eq!(format_money(v), format_money_reference(v), "{v:?}");
        }
    }
}

/// Serde forms of a decimal for state snapshots (`#[serde(with = "money::dec")]`, and
/// `dec_opt`, `dec_deque` for `Option<Decimal>` and `VecDeque<Decimal>`).
///
/// A human-readable format (JSON: the account API, version-1 snapshots) gets exactly what
/// rust_decimal writes and reads, a string. A binary format (the changelog's postcard snapshots)
/// gets a header byte (scale in bits 0-4, sign in bit 7) and the 96-bit magnitude as a varint:
/// `1234.56` takes 4 bytes instead of 16 or a 9-character string. Scale and sign are kept as
/// they are, so a restored amount prints exactly as the original did (`100.00`, `-0`).
pub mod dec {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            <Decimal as Serialize>::serialize(v, s)
        } else {
            let header = (v.scale() as u8) | if v.is_sign_negative() { 0x80 } else { 0 };
            (header, v.mantissa().unsigned_abs()).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        if d.is_human_readable() {
            return <Decimal as Deserialize>::deserialize(d);
        }
        let (header, magnitude) = <(u8, u128)>::deserialize(d)?;
        let scale = u32::from(header & 0x1f);
        if header & 0x60 != 0 || scale > 28 || magnitude >> 96 != 0 {
            return Err(serde::de::Error::custom("invalid binary decimal"));
        }
        Ok(Decimal::from_parts(
            magnitude as u32,
            (magnitude >> 32) as u32,
            (magnitude >> 64) as u32,
            header & 0x80 != 0,
            scale,
        ))
    }

    /// A decimal that serializes through [`serialize`] / [`deserialize`].
    #[derive(Clone, Copy)]
    pub(super) struct D(pub Decimal);

    impl Serialize for D {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(&self.0, s)
        }
    }

    impl<'de> Deserialize<'de> for D {
        fn deserialize<De: Deserializer<'de>>(d: De) -> Result<D, De::Error> {
            deserialize(d).map(D)
        }
    }
}

/// [`dec`] for an `Option<Decimal>`.
pub mod dec_opt {
    use super::dec::D;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        v.map(D).serialize(s)
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<Option<Decimal>, De::Error> {
        Ok(Option::<D>::deserialize(d)?.map(|x| x.0))
    }
}

/// [`dec`] for a `VecDeque<Decimal>`.
pub mod dec_deque {
    use super::dec::D;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::VecDeque;

    pub fn serialize<S: Serializer>(v: &VecDeque<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| D(*x)))
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<VecDeque<Decimal>, De::Error> {
        Ok(Vec::<D>::deserialize(d)?.into_iter().map(|x| x.0).collect())
    }
}
