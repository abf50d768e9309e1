//! Where a tenant may make the server connect: public addresses over TLS, unless the operator
//! allow-listed the host.
//!
//! A URL is checked when a channel is saved (its scheme, no credentials in it, and every address
//! its host resolves to) and again at every delivery: HTTP deliveries resolve through
//! [`GuardedResolver`], which refuses a host that now resolves to a private address (DNS
//! rebinding), and SMTP deliveries connect to an address checked the same way.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use crate::error::{Result, invalid};

/// The operator's allow-list and the checks made against it.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    allow_hosts: Vec<String>,
}

/// A URL that passed the static checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub https: bool,
}

impl UrlPolicy {
    /// A policy allowing, besides public addresses over TLS, the hosts in `allow_hosts`
    /// (names or IP addresses, compared case-insensitively) on any address and scheme.
    pub fn new<I, S>(allow_hosts: I) -> UrlPolicy
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        UrlPolicy {
            allow_hosts: allow_hosts
                .into_iter()
                .map(|h| normalize_host(h.as_ref()))
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether the operator allow-listed `host`.
    pub fn allows_host(&self, host: &str) -> bool {
        let h = normalize_host(host);
        self.allow_hosts.contains(&h)
    }

    /// The checks that need no DNS: an absolute `https` URL (or `http` to an allow-listed host)
    /// without credentials, whose host, if an IP address, is public or allow-listed.
    pub fn check_url(&self, field: &str, url: &str) -> Result<Target> {
        let bad = |m: &str| invalid(field, m.to_owned());
        if url.len() > 2048 {
            return Err(bad("must be at most 2048 characters"));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| bad("must be an absolute https:// URL"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| bad("must be an absolute https:// URL"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not carry credentials"));
        }
        let host = normalize_host(authority.host());
        if host.is_empty() {
            return Err(bad("must name a host"));
        }
        let allowed = self.allows_host(&host);
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if allowed => false,
            _ => return Err(bad("must use https")),
        };
        if let Ok(ip) = host.parse::<IpAddr>()
            && !allowed
            && !is_public(ip)
        {
            return Err(bad(
                "must not point at a loopback, link-local or private address",
            ));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target { host, port, https })
    }

    /// Checks a host name on its own (an SMTP server): syntax, and a public IP if it is one.
    pub fn check_host(&self, field: &str, host: &str) -> Result<String> {
        let h = normalize_host(host);
        let syntax_ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !syntax_ok {
            return Err(invalid(field, "must be a host name or an IP address"));
        }
        if let Ok(ip) = h.parse::<IpAddr>()
            && !self.allows_host(&h)
            && !is_public(ip)
        {
            return Err(invalid(
                field,
                "must not be a loopback, link-local or private address",
            ));
        }
        Ok(h)
    }

    /// Resolves `host` and checks every address it has: all must be public unless the host is
    /// allow-listed. Returns the addresses, with `port`.
    pub async fn resolve(&self, field: &str, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        resolve_checked(self, host, port)
            .await
            .map_err(|e| invalid(field, e.to_string()))
    }
}

/// Resolves through the policy: an error if the host has no address or, unless allow-listed,
/// any address that is not public.
async fn resolve_checked(policy: &UrlPolicy, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let h = normalize_host(host);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((h.as_str(), port))
        .await
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("'{h}' does not resolve: {e}"),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("'{h}' has no address"),
        ));
    }
    if !policy.allows_host(&h)
        && let Some(a) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "'{h}' resolves to {}, which is not a public address",
                a.ip()
            ),
        ));
    }
    Ok(addrs)
}

/// A resolver for hyper-util's connector that applies the policy to every lookup.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub policy: Arc<UrlPolicy>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The connector sets the port itself.
            Ok(resolve_checked(&policy, name.as_str(), 0)
                .await?
                .into_iter())
        })
    }
}

fn normalize_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `ip` is a globally reachable unicast address: not loopback, link-local, private
/// (RFC 1918, unique local), shared (100.64/10), documentation, benchmarking, multicast,
/// reserved or unspecified, including IPv4 addresses embedded in IPv6 forms that reach them.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = a == 0 // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !blocked
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| {
        Ipv4Addr::new(
            (hi >> 8) as u8,
            (hi & 0xff) as u8,
            (lo >> 8) as u8,
            (lo & 0xff) as u8,
        )
    };
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64 well-known prefix: reaches the embedded IPv4 address.
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: the relay reaches the embedded IPv4 address.
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let blocked = ip.is_unspecified()
        || ip.is_loopback()
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0x0000) // Teredo
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]); // discard-only
    !blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ip(ip: &str, public: bool) {
        assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
    }

    #[test]
    fn address_classes() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            check_ip(ip, false);
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            check_ip(ip, true);
        }
    }

    #[test]
    fn static_url_rules() {
        let p = UrlPolicy::new(["127.0.0.1", "Hooks.Internal."]);
        let ok = |u: &str| p.check_url("url", u).unwrap();
        let bad = |u: &str| assert!(p.check_url("url", u).is_err(), "{u}");
        assert_eq!(
            ok("https://hooks.slack.com/services/T/B/X"),
            Target {
                host: "hooks.slack.com".into(),
                port: 443,
                https: true
            }
        );
        assert_eq!(ok("http://127.0.0.1:8080/x").port, 8080);
        assert!(!ok("http://hooks.internal/x").https);
        bad("http://example.com/hook");
        bad("ftp://example.com/");
        bad("https://user:pw@example.com/");
        bad("https://10.0.0.1/");
        bad("https://[::1]/");
        bad("https://169.254.169.254/latest/meta-data");
        bad("/relative");
        bad("https://127.0.0.2/");
        assert!(p.check_host("smtp.host", "10.0.0.5").is_err());
        assert!(p.check_host("smtp.host", "bad host!").is_err());
        assert_eq!(
            p.check_host("smtp.host", "Mail.Example.com").unwrap(),
            "mail.example.com"
        );
    }
}
