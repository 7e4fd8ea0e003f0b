//! Which IP addresses the server may connect to on a client's behalf (metadata documents):
//! only globally reachable unicast ones, classified from the IANA Special-Purpose Address
//! Registries (RFC 6890; IPv4 and IPv6 registries as of 2025, including RFC 9637 and
//! RFC 9602), so that a URL cannot make the server reach its own network.
//!
//! The rule is "allow only what is known to be global", not "block what is known to be
//! private":
//!
//! - IPv6: only the global unicast block `2000::/3` (RFC 4291 §2.4), less the special-purpose
//!   blocks inside it. Everything else — loopback, IPv4-mapped and IPv4-compatible forms,
//!   NAT64 prefixes, unique-local, link-local, site-local, multicast, discard, SRv6 — is
//!   refused, whatever it may embed.
//! - IPv4: everything except the special-purpose blocks that are not globally reachable,
//!   multicast (`224.0.0.0/4`, RFC 5771) and the reserved `240.0.0.0/4`.
//!
//! Where the registry marks a small part of a refused block as globally reachable (anycast
//! addresses in `192.0.0.0/24` and `2001::/23`), the whole block is refused: those are
//! service addresses no metadata document is served from, and a coarser rule is easier to
//! trust.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, for the decision to connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally reachable unicast: may be connected to.
    Global,
    /// `127.0.0.0/8` or `::1`: refused, except with the loopback development setting.
    Loopback,
    /// Not globally reachable; the name of the block, for logs.
    NonGlobal(&'static str),
}

/// A special-purpose block: network, prefix length, registry name.
struct Block<T> {
    network: T,
    prefix: u8,
    name: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, name: &'static str) -> Block<u32> {
    Block {
        network: u32::from_be_bytes([a, b, c, d]),
        prefix,
        name,
    }
}

const fn v6(network: u128, prefix: u8, name: &'static str) -> Block<u128> {
    Block {
        network,
        prefix,
        name,
    }
}

/// IANA IPv4 Special-Purpose Address Registry entries that are not globally reachable
/// (plus multicast and the deprecated 6to4 relay anycast block). Loopback is handled apart.
const IPV4_NON_GLOBAL: &[Block<u32>] = &[
    v4(0, 0, 0, 0, 8, "\"this network\" (RFC 791)"),
    v4(10, 0, 0, 0, 8, "private-use (RFC 1918)"),
    v4(100, 64, 0, 0, 10, "shared address space (RFC 6598)"),
    v4(169, 254, 0, 0, 16, "link-local (RFC 3927)"),
    v4(172, 16, 0, 0, 12, "private-use (RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (RFC 6890)"),
    v4(192, 0, 2, 0, 24, "documentation TEST-NET-1 (RFC 5737)"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "deprecated 6to4 relay anycast (RFC 7526)",
    ),
    v4(192, 168, 0, 0, 16, "private-use (RFC 1918)"),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)"),
    v4(198, 51, 100, 0, 24, "documentation TEST-NET-2 (RFC 5737)"),
    v4(203, 0, 113, 0, 24, "documentation TEST-NET-3 (RFC 5737)"),
    v4(224, 0, 0, 0, 4, "multicast (RFC 5771)"),
    v4(
        240,
        0,
        0,
        0,
        4,
        "reserved and limited broadcast (RFC 1112, RFC 919)",
    ),
];

/// Blocks outside `2000::/3`, named so that logs say what was refused; anything else
/// outside `2000::/3` is refused too, as "not global unicast".
const IPV6_OUTSIDE_GLOBAL_UNICAST: &[Block<u128>] = &[
    v6(0, 128, "unspecified (RFC 4291)"),
    v6(0, 96, "IPv4-compatible, deprecated (RFC 4291)"),
    v6(0xffff_0000_0000_u128, 96, "IPv4-mapped (RFC 4291)"),
    v6(
        0x0064_ff9b_u128 << 96,
        96,
        "IPv4/IPv6 translation, NAT64 (RFC 6052)",
    ),
    v6(
        0x0064_ff9b_0001_u128 << 80,
        48,
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    v6(0x0100_u128 << 112, 64, "discard-only (RFC 6666)"),
    v6(0x5f00_u128 << 112, 16, "SRv6 SIDs (RFC 9602)"),
    v6(0xfc00_u128 << 112, 7, "unique-local (RFC 4193)"),
    v6(0xfe80_u128 << 112, 10, "link-local (RFC 4291)"),
    v6(0xfec0_u128 << 112, 10, "site-local, deprecated (RFC 3879)"),
    v6(0xff00_u128 << 112, 8, "multicast (RFC 4291)"),
];

/// Special-purpose blocks inside `2000::/3` that are not (or not reliably) globally reachable.
const IPV6_NON_GLOBAL_IN_2000: &[Block<u128>] = &[
    // Teredo (2001::/32), benchmarking, ORCHID and the rest of the IETF assignments: the
    // registry marks a few anycast parts global, but none serves documents.
    v6(
        0x2001_u128 << 112,
        23,
        "IETF protocol assignments, incl. Teredo (RFC 2928, RFC 4380)",
    ),
    v6(0x2001_0db8_u128 << 96, 32, "documentation (RFC 3849)"),
    v6(0x2002_u128 << 112, 16, "6to4 (RFC 3056)"),
    v6(0x3fff_u128 << 112, 20, "documentation (RFC 9637)"),
];

fn contains<T>(block: &Block<T>, addr: T, bits: u32) -> bool
where
    T: Copy + std::ops::BitAnd<Output = T> + std::ops::Shl<u32, Output = T> + PartialEq,
    T: From<u8> + std::ops::Not<Output = T>,
{
    if block.prefix == 0 {
        return true;
    }
    let all = !T::from(0u8);
    let mask = all << (bits - u32::from(block.prefix));
    addr & mask == block.network & mask
}

/// Classify an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let addr = u32::from(ip);
    match IPV4_NON_GLOBAL.iter().find(|b| contains(b, addr, 32)) {
        Some(b) => AddressClass::NonGlobal(b.name),
        None => AddressClass::Global,
    }
}

/// Classify an IPv6 address. Addresses that embed an IPv4 address (mapped, compatible,
/// NAT64, 6to4, Teredo) are refused outright, not judged by what they embed: how the
/// network routes them is outside our view.
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip == Ipv6Addr::LOCALHOST {
        return AddressClass::Loopback;
    }
    let addr = u128::from(ip);
    if let Some(b) = IPV6_OUTSIDE_GLOBAL_UNICAST
        .iter()
        .find(|b| contains(b, addr, 128))
    {
        return AddressClass::NonGlobal(b.name);
    }
    let global_unicast = v6(0x2000_u128 << 112, 3, "global unicast");
    if !contains(&global_unicast, addr, 128) {
        return AddressClass::NonGlobal("not global unicast (outside 2000::/3, RFC 4291)");
    }
    match IPV6_NON_GLOBAL_IN_2000
        .iter()
        .find(|b| contains(b, addr, 128))
    {
        Some(b) => AddressClass::NonGlobal(b.name),
        None => AddressClass::Global,
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Is `ip` globally reachable unicast?
pub fn is_global(ip: IpAddr) -> bool {
    classify(ip) == AddressClass::Global
}

/// May the server connect to `ip`? Global addresses, and loopback ones when the development
/// setting allows them.
pub fn may_connect(ip: IpAddr, allow_loopback: bool) -> bool {
    match classify(ip) {
        AddressClass::Global => true,
        AddressClass::Loopback => allow_loopback,
        AddressClass::NonGlobal(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_last(b: &Block<u32>) -> u32 {
        b.network | (u32::MAX.checked_shr(u32::from(b.prefix)).unwrap_or(0))
    }

    fn v6_last(b: &Block<u128>) -> u128 {
        b.network | (u128::MAX.checked_shr(u32::from(b.prefix)).unwrap_or(0))
    }

    /// Every IPv4 block: its first and last addresses are refused under its own name, and the
    /// addresses just outside it are not classified as it.
    #[test]
    fn every_ipv4_block_is_refused_from_its_first_to_its_last_address() {
        for b in IPV4_NON_GLOBAL {
            let (first, last) = (b.network, v4_last(b));
            for addr in [first, last] {
                assert_eq!(
                    classify_v4(Ipv4Addr::from(addr)),
                    AddressClass::NonGlobal(b.name),
                    "{} in {}",
                    Ipv4Addr::from(addr),
                    b.name
                );
            }
            for outside in [first.checked_sub(1), last.checked_add(1)]
                .into_iter()
                .flatten()
            {
                assert_ne!(
                    classify_v4(Ipv4Addr::from(outside)),
                    AddressClass::NonGlobal(b.name),
                    "{} is outside {}",
                    Ipv4Addr::from(outside),
                    b.name
                );
            }
        }
    }

    #[test]
    fn every_ipv6_block_is_refused_from_its_first_to_its_last_address() {
        for b in IPV6_OUTSIDE_GLOBAL_UNICAST
            .iter()
            .chain(IPV6_NON_GLOBAL_IN_2000)
        {
            let (first, last) = (b.network, v6_last(b));
            for addr in [first, last] {
                let ip = Ipv6Addr::from(addr);
                assert!(
                    matches!(classify_v6(ip), AddressClass::NonGlobal(_)),
                    "{ip} in {}",
                    b.name
                );
            }
        }
    }

    /// The neighbours of each block: the global ones on either side, by table.
    #[test]
    fn addresses_next_to_refused_blocks_are_global() {
        for (ip, why) in [
            ("1.0.0.0", "after 0.0.0.0/8"),
            ("9.255.255.255", "before 10.0.0.0/8"),
            ("11.0.0.0", "after 10.0.0.0/8"),
            ("100.63.255.255", "before 100.64.0.0/10"),
            ("100.128.0.0", "after 100.64.0.0/10"),
            ("126.255.255.255", "before 127.0.0.0/8"),
            ("128.0.0.0", "after 127.0.0.0/8"),
            ("169.253.255.255", "before 169.254.0.0/16"),
            ("169.255.0.0", "after 169.254.0.0/16"),
            ("172.15.255.255", "before 172.16.0.0/12"),
            ("172.32.0.0", "after 172.16.0.0/12"),
            ("191.255.255.255", "before 192.0.0.0/24"),
            ("192.0.1.0", "between 192.0.0.0/24 and 192.0.2.0/24"),
            ("192.0.3.0", "after 192.0.2.0/24"),
            ("192.88.98.255", "before 192.88.99.0/24"),
            ("192.88.100.0", "after 192.88.99.0/24"),
            ("192.167.255.255", "before 192.168.0.0/16"),
            ("192.169.0.0", "after 192.168.0.0/16"),
            ("198.17.255.255", "before 198.18.0.0/15"),
            ("198.20.0.0", "after 198.18.0.0/15"),
            ("198.51.99.255", "before 198.51.100.0/24"),
            ("198.51.101.0", "after 198.51.100.0/24"),
            ("203.0.112.255", "before 203.0.113.0/24"),
            ("203.0.114.0", "after 203.0.113.0/24"),
            ("223.255.255.255", "before 224.0.0.0/4"),
            ("192.31.196.1", "AS112, globally reachable"),
            ("192.52.193.1", "AMT, globally reachable"),
            ("93.184.216.34", "an ordinary public address"),
            ("2000::", "first of 2000::/3"),
            ("2001:200::", "after 2001::/23"),
            (
                "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
                "before 2001:db8::/32",
            ),
            ("2001:db9::", "after 2001:db8::/32"),
            (
                "2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "before 2002::/16",
            ),
            ("2003::", "after 2002::/16"),
            (
                "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "before 3fff::/20",
            ),
            ("3fff:1000::", "after 3fff::/20"),
            (
                "2620:4f:8000::1",
                "AS112 direct delegation, globally reachable",
            ),
            (
                "2606:2800:220:1:248:1893:25c8:1946",
                "an ordinary public address",
            ),
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip}: {why}");
        }
    }

    #[test]
    fn addresses_that_reach_the_local_network_in_disguise_are_refused() {
        for (ip, why) in [
            ("::127.0.0.1", "IPv4-compatible loopback"),
            ("::10.0.0.1", "IPv4-compatible private"),
            ("::8.8.8.8", "IPv4-compatible, even of a public address"),
            ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
            ("::ffff:10.0.0.1", "IPv4-mapped private"),
            ("::ffff:8.8.8.8", "IPv4-mapped, even of a public address"),
            ("2002:7f00:1::", "6to4 of 127.0.0.1"),
            ("2002:a00:1::", "6to4 of 10.0.0.1"),
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            ("fec0::1", "site-local"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("100::1", "discard-only"),
            ("5f00::1", "SRv6"),
            ("4000::1", "outside 2000::/3"),
            (
                "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "just before 2000::/3",
            ),
            ("::", "unspecified"),
            ("0.0.0.0", "this network"),
            ("169.254.169.254", "cloud metadata, link-local"),
            ("255.255.255.255", "limited broadcast"),
            ("192.0.0.9", "PCP anycast, refused with the whole /24"),
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}: {why}");
        }
    }

    #[test]
    fn loopback_is_allowed_only_with_the_development_setting() {
        for ip in ["127.0.0.1", "127.255.255.255", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(classify(ip), AddressClass::Loopback, "{ip}");
            assert!(!may_connect(ip, false), "{ip}");
            assert!(may_connect(ip, true), "{ip}");
        }
        for ip in ["::ffff:127.0.0.1", "::127.0.0.1", "10.0.0.1"] {
            assert!(
                !may_connect(ip.parse().unwrap(), true),
                "{ip}: the development setting allows only plain loopback"
            );
        }
        assert!(may_connect("8.8.8.8".parse().unwrap(), false));
    }
}
