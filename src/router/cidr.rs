//! Which provider addresses croupier accepts.
//!
//! A proxy that forwards to whatever address anyone announces can be turned
//! against the network it sits in (the cloud metadata service at
//! 169.254.169.254 is the classic target). Operators list the networks their
//! providers live in with `--allow-provider`; without a list croupier still
//! refuses addresses that can never be a provider.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len)).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr =
            address.parse().map_err(|_| format!("`{text}` is not an address or network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Why an announced address was refused, for the 403's reason.
pub fn refusal(address: IpAddr, allowed: &[Cidr]) -> Option<String> {
    if address.is_unspecified() {
        return Some(format!("{address} is unspecified"));
    }
    if address.is_multicast() {
        return Some(format!("{address} is multicast"));
    }
    let link_local = match address {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return Some(format!("{address} is link-local or broadcast"));
    }
    if !allowed.is_empty() && !allowed.iter().any(|network| network.contains(address)) {
        return Some(format!("{address} is outside every --allow-provider network"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn refuses_addresses_that_cannot_be_providers() {
        for bad in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "169.254.169.254", "fe80::1"] {
            assert!(refusal(bad.parse().unwrap(), &[]).is_some(), "{bad}");
        }
        assert!(refusal("127.0.0.1".parse().unwrap(), &[]).is_none());
        let only: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(refusal("127.0.0.1".parse().unwrap(), &only).is_some());
        assert!(refusal("10.1.1.1".parse().unwrap(), &only).is_none());
    }
}
