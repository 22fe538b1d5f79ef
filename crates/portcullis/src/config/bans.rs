//! `[[ban]]`: when refusals turn into a ban of the address.

use std::time::Duration;

use portcullis_policy::ban::BanRule;
use toml::Spanned;

use super::error::Collector;
use super::raw::RawConfig;

/// `[[ban]]` rules.
pub(super) fn build_bans(c: &mut Collector<'_>, raw: &RawConfig) -> Vec<BanRule> {
    let mut out: Vec<BanRule> = Vec::new();
    for (i, spanned) in raw.bans.iter().enumerate() {
        let b = spanned.get_ref();
        let name = b.name.as_ref().map_or_else(|| format!("ban-{}", i + 1), |n| n.get_ref().clone());
        if !portcullis_policy::principal::is_valid_name(&name) {
            let span = b.name.as_ref().map_or(spanned.span(), Spanned::span);
            c.error(span, format!("invalid ban rule name {name:?}")).expected("letters, digits and . _ : / -");
            continue;
        }
        if out.iter().any(|r| r.name == name) {
            c.error(spanned.span(), format!("two [[ban]] rules are named {name:?}"))
                .help("give each rule its own name");
            continue;
        }
        let Some(count) = u32::try_from(*b.count.get_ref()).ok().filter(|n| (1..=1_000_000).contains(n)) else {
            c.error(b.count.span(), "count is out of range").expected("between 1 and 1000000");
            continue;
        };
        let within = super::values::duration(c, Some(&b.within), Duration::from_secs(60), "within");
        let duration = super::values::duration(c, Some(&b.duration), Duration::from_secs(900), "duration");
        let exempt_ips = super::values::ip_nets(c, b.exempt_ips.as_ref(), "address");
        match BanRule::new(name, b.on.get_ref(), count, within, duration) {
            Ok(mut rule) => {
                rule.exempt_ips = exempt_ips;
                out.push(rule);
            }
            Err(e) => {
                let groups = portcullis_policy::ban::GROUPS.iter().map(|(g, _)| *g).collect::<Vec<_>>().join(", ");
                c.error(b.on.span(), format!("unusable ban rule: {e}"))
                    .expected(format!("reason codes from docs/events.md, `defence.*`, or one of: {groups}"));
            }
        }
    }
    out
}
