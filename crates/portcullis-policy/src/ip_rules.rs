//! IP allow and deny lists, globally and per route.
//!
//! Decision rules: a client address (after trusted-proxy resolution) on the
//! deny list is refused (`ip.denied`); with a non-empty allow list, an
//! address not on it is refused (`ip.not_allowed`); deny wins over allow.
//! IPv4-mapped IPv6 addresses are compared as IPv4.
//!
//! Deployment caveat: behind a proxy or load balancer, list it in
//! `trusted_proxies`, or every client has the proxy's address.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::deny::{Denied, Reason};

/// See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    /// Addresses allowed; empty means any.
    pub allow: Vec<IpNet>,
    /// Addresses refused.
    pub deny: Vec<IpNet>,
}

impl IpRules {
    /// Whether there is anything to check.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Checks `ip`.
    ///
    /// # Errors
    /// `ip.denied` or `ip.not_allowed`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = crate::forwarded::canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Err(Denied::new(Reason::IpDenied).with_detail(format!("{ip} is on the deny list")));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            return Err(Denied::new(Reason::IpNotAllowed).with_detail(format!("{ip} is not on the allow list")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        IpRules {
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny: deny.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn deny_wins_allow_restricts_mapped_addresses_compare_as_v4() {
        let r = rules(&["10.0.0.0/8", "2001:db8::/32"], &["10.6.6.0/24"]);
        let check = |ip: &str| r.check(ip.parse().unwrap()).map_err(|d| d.reason);
        assert_eq!(check("10.1.2.3"), Ok(()));
        assert_eq!(check("10.6.6.6"), Err(Reason::IpDenied));
        assert_eq!(check("192.0.2.1"), Err(Reason::IpNotAllowed));
        assert_eq!(check("::ffff:10.1.2.3"), Ok(()));
        assert_eq!(check("::ffff:10.6.6.6"), Err(Reason::IpDenied));
        assert_eq!(check("2001:db8::1"), Ok(()));
        assert!(IpRules::default().check("203.0.113.1".parse().unwrap()).is_ok());
        assert!(rules(&[], &["0.0.0.0/0"]).check("1.2.3.4".parse().unwrap()).is_err());
    }
}
