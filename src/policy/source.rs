//! Where a request comes from: the networks a key may be used from, and
//! the client address they are checked against (CONTRACT.md section 8).

use std::net::IpAddr;

use ipnet::IpNet;

/// One network of a `source_cidrs` list or of `--trusted-proxies`:
/// `203.0.113.0/24`, `2001:db8::/32`, or a single address. Host bits are
/// cleared (`203.0.113.7/24` is `203.0.113.0/24`), and an IPv4-mapped IPv6
/// network is stored as the IPv4 network it is.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let network = match text.parse::<IpNet>() {
        Ok(network) => network,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(address) => IpNet::from(address),
            Err(_) => {
                return Err(format!(
                    "{text:?} is not an IPv4 or IPv6 network (CIDR such as 203.0.113.0/24 or 2001:db8::/32)"
                ))
            }
        },
    };
    Ok(unmap(network).trunc())
}

/// `::ffff:192.0.2.0/120` is `192.0.2.0/24`: a dual-stack listener reports
/// IPv4 peers in that form, and a rule must match either way.
fn unmap(network: IpNet) -> IpNet {
    match network {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(network)
            }
            _ => network,
        },
        v4 => v4,
    }
}

/// Comma-separated, as `--trusted-proxies` takes them.
pub fn parse_networks(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_network)
        .collect()
}

/// Hops of `X-Forwarded-For` looked at, from the right: a longer chain of
/// trusted proxies does not exist, and the work per request stays bounded.
const MAX_FORWARDED_HOPS: usize = 32;

/// The client's address: the socket peer, unless the peer is one of the
/// operator's trusted proxies. Then the `X-Forwarded-For` hops are walked
/// from the right (the hop nearest to keygate first), skipping trusted
/// proxies, and the first untrusted hop is the client. Anything left of it
/// was written by the client itself and may be forged. A hop that is not
/// an address gives `None`: the source is unknown, and a key limited to
/// some networks is refused.
///
/// `forwarded_for` is every `X-Forwarded-For` field line, in order.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer.map(|p| p.to_canonical())?;
    let trusted = |address: &IpAddr| trusted_proxies.iter().any(|net| net.contains(address));
    if !trusted(&peer) {
        return Some(peer);
    }
    let mut nearest = peer;
    let hops = forwarded_for
        .rev()
        .flat_map(|line| line.rsplit(|&b| b == b','));
    for hop in hops.take(MAX_FORWARDED_HOPS) {
        let address = parse_hop(hop)?;
        if !trusted(&address) {
            return Some(address);
        }
        nearest = address;
    }
    // Every hop was a trusted proxy (or there were none): the leftmost one
    // seen is as close to the client as anyone can tell.
    Some(nearest)
}

/// `203.0.113.7`, `2001:db8::1`, and the forms some proxies write with a
/// port: `203.0.113.7:4711`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse::<IpAddr>().ok().map(|a| a.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_in_every_usual_form() {
        assert_eq!(
            parse_network("203.0.113.0/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            parse_network("203.0.113.7/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            parse_network("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_network("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_network("::ffff:192.0.2.0/120").unwrap().to_string(),
            "192.0.2.0/24"
        );
        for bad in [
            "",
            "203.0.113.0/33",
            "2001:db8::/129",
            "example.com",
            "10.0.0.0/",
            "1.2.3",
        ] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxies = parse_networks("10.0.0.0/8, fd00::/8").unwrap();
        let xff: [&[u8]; 1] = [b"198.51.100.9, 203.0.113.5"];
        // No trusted proxies: the header is ignored.
        assert_eq!(
            client_address(Some(ip("10.0.0.1")), xff.into_iter(), &[]),
            Some(ip("10.0.0.1"))
        );
        // An untrusted peer cannot speak for anyone else.
        assert_eq!(
            client_address(Some(ip("192.0.2.1")), xff.into_iter(), &proxies),
            Some(ip("192.0.2.1"))
        );
        // Behind a trusted proxy: the rightmost hop, not the forged left one.
        assert_eq!(
            client_address(Some(ip("10.0.0.1")), xff.into_iter(), &proxies),
            Some(ip("203.0.113.5"))
        );
        // Trusted hops are skipped, across field lines.
        let lines: [&[u8]; 2] = [b"198.51.100.9", b"203.0.113.5, 10.1.1.1"];
        assert_eq!(
            client_address(Some(ip("10.0.0.1")), lines.into_iter(), &proxies),
            Some(ip("203.0.113.5"))
        );
        let v6: [&[u8]; 1] = [b"[2001:db8::7]:4711, fd00::2"];
        assert_eq!(
            client_address(Some(ip("fd00::1")), v6.into_iter(), &proxies),
            Some(ip("2001:db8::7"))
        );
        let garbage: [&[u8]; 1] = [b"198.51.100.9, not-an-address"];
        assert_eq!(
            client_address(Some(ip("10.0.0.1")), garbage.into_iter(), &proxies),
            None
        );
        let none: [&[u8]; 0] = [];
        assert_eq!(
            client_address(Some(ip("10.0.0.1")), none.into_iter(), &proxies),
            Some(ip("10.0.0.1"))
        );
        // A dual-stack listener's IPv4 peer.
        assert_eq!(
            client_address(Some(ip("::ffff:192.0.2.1")), none.into_iter(), &proxies),
            Some(ip("192.0.2.1"))
        );
    }
}
