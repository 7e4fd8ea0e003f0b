//! The country a client address is in, for the geography panel.
//!
//! Addresses that are not globally routable (loopback, RFC 1918, shared address space, link
//! local, unique local IPv6…) have no country: they are shown as [`PRIVATE`], never given a
//! made-up one. A public address the GeoIP database does not know is [`UNKNOWN`].

use std::net::IpAddr;

use crate::security::address::is_global;

/// The country of an address that is not globally routable.
pub const PRIVATE: &str = "private";
/// The country of a public address the GeoIP database has no country for.
pub const UNKNOWN: &str = "unknown";

/// The country of `ip`: [`PRIVATE`] for an address that is not global, else what `lookup`
/// finds (an ISO 3166-1 alpha-2 code, kept only if it is one), else [`UNKNOWN`].
/// An IPv4 address in IPv6 form (`::ffff:a.b.c.d`, as a dual-stack listener reports it)
/// is judged as the IPv4 address.
pub fn country_of(ip: IpAddr, lookup: impl FnOnce(IpAddr) -> Option<String>) -> String {
    let ip = ip.to_canonical();
    if !is_global(ip) {
        return PRIVATE.to_owned();
    }
    match lookup(ip) {
        Some(code) if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) => code,
        _ => UNKNOWN.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(code: &'static str) -> impl FnOnce(IpAddr) -> Option<String> {
        move |_| Some(code.to_owned())
    }

    #[test]
    fn addresses_that_are_not_global_are_private_without_a_lookup() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let country = country_of(ip, |_| panic!("{ip} must not be looked up"));
            assert_eq!(country, PRIVATE, "{ip}");
        }
    }

    #[test]
    fn public_addresses_get_the_country_found_or_unknown() {
        let ip: IpAddr = "81.2.69.160".parse().unwrap();
        assert_eq!(country_of(ip, found("GB")), "GB");
        assert_eq!(country_of(ip, |_| None), UNKNOWN);
        // What the database says is kept only if it is a country code.
        assert_eq!(country_of(ip, found("gb")), UNKNOWN);
        assert_eq!(country_of(ip, found("<b>")), UNKNOWN);
        assert_eq!(country_of(ip, found("")), UNKNOWN);
    }

    #[test]
    fn an_ipv4_address_in_ipv6_form_is_looked_up_as_ipv4() {
        let ip: IpAddr = "::ffff:81.2.69.160".parse().unwrap();
        let country = country_of(ip, |looked_up| {
            assert_eq!(looked_up, "81.2.69.160".parse::<IpAddr>().unwrap());
            Some("GB".to_owned())
        });
        assert_eq!(country, "GB");
    }
}
