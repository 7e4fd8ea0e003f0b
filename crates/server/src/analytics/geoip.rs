//! Country lookups in a MaxMind-format GeoIP database (GeoLite2-Country, GeoIP2-Country or
//! City, or any database with a `country.iso_code`), configured as
//! `analytics.geoip_database`. Addresses are looked up in memory; nothing leaves the machine.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{PathElement, Reader};

use mcp_oauth_core::analytics::geo;

pub struct GeoIp {
    reader: Reader<Vec<u8>>,
}

impl GeoIp {
    /// Open the database at `path`; the error names the setting and the problem.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = Reader::open_readfile(path).map_err(|e| {
            anyhow::anyhow!(
                "analytics.geoip_database: {} is not a readable MaxMind database ({e}); \
                 point it at a GeoLite2-Country.mmdb file or remove the setting",
                path.display()
            )
        })?;
        Ok(Self { reader })
    }

    /// The country of `ip` (see [`geo::country_of`]).
    pub fn country_of(&self, ip: IpAddr) -> String {
        geo::country_of(ip, |ip| {
            const ISO_CODE: [PathElement<'static>; 2] =
                [PathElement::Key("country"), PathElement::Key("iso_code")];
            // A lookup error means a corrupt record: the country is not known.
            self.reader
                .lookup(ip)
                .ok()?
                .decode_path::<String>(&ISO_CODE)
                .ok()?
        })
    }
}

/// The country a request came from, for the MCP messages it carries (set by
/// `http::record_requests` when a GeoIP database is configured).
#[derive(Debug, Clone)]
pub struct RequestCountry(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn test_db() -> GeoIp {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-country.mmdb");
        GeoIp::open(&path).unwrap()
    }

    #[test]
    fn countries_come_from_the_database() {
        let db = test_db();
        let of = |ip: &str| db.country_of(ip.parse().unwrap());
        assert_eq!(of("81.2.69.160"), "GB");
        assert_eq!(of("89.160.20.112"), "SE");
        assert_eq!(of("216.160.83.56"), "US");
        assert_eq!(of("2a02:cf40::1"), "NO");
        assert_eq!(of("::ffff:81.2.69.160"), "GB");
        assert_eq!(of("8.8.8.8"), geo::UNKNOWN);
        assert_eq!(of("192.168.0.10"), geo::PRIVATE);
        assert_eq!(of("127.0.0.1"), geo::PRIVATE);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_the_setting_named() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("mcp-oauth-not-geoip-{}.mmdb", std::process::id()));
        std::fs::write(&path, b"not a database").unwrap();
        let err = GeoIp::open(&path).err().unwrap().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.starts_with("analytics.geoip_database: "), "{err}");
        let missing = GeoIp::open(&dir.join("mcp-oauth-missing.mmdb"))
            .err()
            .unwrap();
        assert!(
            missing.to_string().contains("mcp-oauth-missing.mmdb"),
            "{missing}"
        );
    }
}
