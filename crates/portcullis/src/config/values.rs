//! Values that appear in many sections — durations, sizes, rates, counts,
//! addresses, one-of-a-few-words — each read with its position, so every
//! section reports a bad value the same way.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::Collector;
use super::raw::Size;

pub(super) const DURATION_EXAMPLE: &str = "a duration such as \"500ms\", \"10s\", \"5m\"";
pub(super) const SIZE_EXAMPLE: &str = "a byte count such as 8192 or a size such as \"16KiB\", \"10MB\"";

/// Addresses or CIDRs (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`), each
/// reported with its position when it does not parse.
pub(super) fn ip_nets(c: &mut Collector<'_>, list: Option<&Vec<Spanned<String>>>, what: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for entry in list.into_iter().flatten() {
        let text = entry.get_ref().trim();
        match text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from)) {
            Some(net) => out.push(net.trunc()),
            None => {
                c.error(entry.span(), format!("invalid {what} {text:?}"))
                    .expected("an IP address or CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\"");
            }
        }
    }
    out
}

/// `max_in_flight`: a positive count.
pub(super) fn in_flight(c: &mut Collector<'_>, value: Option<&Spanned<i64>>) -> Option<usize> {
    let value = value?;
    match usize::try_from(*value.get_ref()) {
        Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
        _ => {
            c.error(value.span(), "max_in_flight is out of range").expected("between 1 and 1000000");
            None
        }
    }
}

/// One of a few words, or the default.
pub(super) fn choice<T: Copy>(
    c: &mut Collector<'_>,
    value: Option<&Spanned<String>>,
    default: T,
    what: &str,
    options: &[(&str, T)],
) -> T {
    let Some(value) = value else { return default };
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == value.get_ref()) {
        return *v;
    }
    let names = options.iter().map(|(n, _)| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    c.error(value.span(), format!("unknown {what} {:?}", value.get_ref())).expected(format!("one of {names}"));
    default
}

/// A duration that may be zero (`leeway = "0s"`).
pub(super) fn duration_or_zero(
    c: &mut Collector<'_>,
    value: Option<&Spanned<String>>,
    default: Duration,
    what: &str,
) -> Duration {
    let Some(value) = value else { return default };
    humantime::parse_duration(value.get_ref()).unwrap_or_else(|e| {
        c.error(value.span(), format!("invalid {what} {:?}: {e}", value.get_ref())).expected(DURATION_EXAMPLE);
        default
    })
}

pub(super) fn duration(
    c: &mut Collector<'_>,
    value: Option<&Spanned<String>>,
    default: Duration,
    what: &str,
) -> Duration {
    let d = duration_or_zero(c, value, default, what);
    if let Some(value) = value
        && d.is_zero()
    {
        c.error(value.span(), format!("{what} must be greater than zero")).expected(DURATION_EXAMPLE);
        return default;
    }
    d
}

pub(super) fn size(
    c: &mut Collector<'_>,
    value: Option<&Spanned<Size>>,
    default: u64,
    min: u64,
    max: u64,
    what: &str,
) -> u64 {
    let Some(value) = value else { return default };
    let parsed = match value.get_ref() {
        Size::Bytes(n) => u64::try_from(*n).ok(),
        Size::Text(text) => text.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => n,
        Some(n) => {
            c.error(value.span(), format!("{what} {n} is out of range"))
                .expected(format!("between {min} and {max} bytes"));
            default
        }
        None => {
            c.error(value.span(), format!("invalid {what}")).expected(SIZE_EXAMPLE);
            default
        }
    }
}

pub(super) const RATE_EXAMPLE: &str = "a rate such as \"500B/s\" or \"1KiB/s\", or 0 for none";

/// A transfer rate: `"500B/s"`, `"1KiB/s"`, or 0 (none). A bare size is
/// refused: the unit says it is per second.
pub(super) fn rate(c: &mut Collector<'_>, value: Option<&Spanned<Size>>, default: u64, what: &str) -> u64 {
    let Some(value) = value else { return default };
    let parsed = match value.get_ref() {
        Size::Bytes(0) => Some(0),
        Size::Bytes(_) => None,
        Size::Text(text) => text
            .trim()
            .strip_suffix("/s")
            .and_then(|size| size.trim().parse::<bytesize::ByteSize>().ok())
            .map(|b| b.as_u64()),
    };
    parsed.unwrap_or_else(|| {
        c.error(value.span(), format!("invalid {what}")).expected(RATE_EXAMPLE);
        default
    })
}

pub(super) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
