//! Who the client is: the TCP peer, or, when the peer is one of `FLASHSALE_TRUSTED_PROXIES`,
//! the last address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
//! appends the address it received the request from, so the addresses to the right of the
//! first untrusted one were written by our proxies and the rest by whoever the client is).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// The key that limits count a client address under: an IPv4 address as it is (an
/// IPv4-mapped IPv6 one as IPv4), an IPv6 address cut to its first `v6_prefix` bits
/// (`FLASHSALE_IPV6_PREFIX`, default 64): one IPv6 subscriber usually holds a whole /64, so
/// keyed by /128 it would be 2^64 clients to every limit.
pub fn address_key(addr: IpAddr, v6_prefix: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The client address of a request from `peer` carrying the `X-Forwarded-For` header values
/// `forwarded` (in the order received).
pub fn client_address(peer: IpAddr, forwarded: &[&[u8]], trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded.iter().rev() {
        for item in value.rsplit(|b| *b == b',') {
            let Some(addr) = parse_hop(item) else {
                // Unreadable: the hop before it is the last one our proxies vouch for.
                return client;
            };
            client = addr;
            if !is_trusted(&addr) {
                return addr;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` element: an address, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_hop(item: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(item).ok()?.trim();
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some(a.to_canonical());
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let k = |a: &str, p| address_key(a.parse().unwrap(), p).to_string();
        assert_eq!(k("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff::9", 64), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:3::1", 64), "2001:db8:1:3::");
        assert_eq!(k("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::");
        assert_eq!(k("2001:db8:1:2:aaaa::1", 128), "2001:db8:1:2:aaaa::1");
        assert_eq!(
            k("::ffff:10.0.0.1", 64),
            "10.0.0.1",
            "IPv4-mapped stays IPv4"
        );
        assert_eq!(k("10.0.0.1", 64), "10.0.0.1");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // An untrusted peer: its header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &[b"1.1.1.1"], &trusted),
            ip("203.0.113.9")
        );
        // Behind one proxy: the address it appended.
        assert_eq!(
            client_address(ip("10.0.0.5"), &[b"198.51.100.7"], &trusted),
            ip("198.51.100.7")
        );
        // A client forging hops: only the last untrusted one counts.
        assert_eq!(
            client_address(
                ip("10.0.0.5"),
                &[b"6.6.6.6, 198.51.100.7", b"10.0.0.9"],
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Ports and brackets.
        assert_eq!(
            client_address(ip("::1"), &[b"[2001:db8::1]:443"], &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), &[b"198.51.100.7:1234"], &trusted),
            ip("198.51.100.7")
        );
        // No header, garbage, or only proxies: the nearest address a proxy vouches for.
        assert_eq!(
            client_address(ip("10.0.0.5"), &[], &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), &[b"nonsense, 10.0.0.7"], &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), &[b"10.0.0.8"], &trusted),
            ip("10.0.0.8")
        );
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            client_address(ip("::ffff:10.0.0.5"), &[b"198.51.100.7"], &trusted),
            ip("198.51.100.7")
        );
    }
}
