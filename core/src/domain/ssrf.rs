//! The SSRF guard: which addresses a destination may not point at.
//!
//! Refused unless the operator allows private destinations: loopback, RFC 1918 private,
//! link-local (cloud metadata lives at 169.254.169.254), CGNAT, unspecified, multicast,
//! broadcast, reserved, documentation (TEST-NET), 6to4 relay and benchmarking ranges, and
//! the IPv6 equivalents, including IPv4 addresses smuggled inside IPv6 (mapped,
//! compatible, NAT64, 6to4) and tunnels that cannot be checked (Teredo, local-use NAT64). Decimal and octal
//! IPv4 spellings never reach here as text: the URL parser normalises them to an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, or `None` when it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback address")
    } else if ip.is_private() {
        Some("private network address")
    } else if ip.is_link_local() {
        Some("link-local or cloud metadata address")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT) address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved address")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking address")
    } else if (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        Some("documentation (TEST-NET) address")
    } else if a == 192 && b == 88 && c == 99 {
        Some("6to4 relay anycast address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4.
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return forbidden_v4(embedded(seg[6], seg[7]));
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return forbidden_v4(embedded(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return forbidden_v4(embedded(seg[1], seg[2]));
    }
    // Local-use NAT64 (64:ff9b:1::/48) translates to whatever the operator's network
    // routes, and Teredo (2001::/32) tunnels to an obfuscated IPv4: neither is a public
    // destination Freight can check.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return Some("local-use NAT64 address");
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        return Some("Teredo tunnel address");
    }
    if ip.is_loopback() {
        Some("loopback address")
    } else if ip.is_unspecified() {
        Some("unspecified address")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("unique local (private) address")
    } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
        Some("link-local address")
    } else if ip.is_multicast() {
        Some("multicast address")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation address")
    } else if seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0 {
        Some("benchmarking address")
    } else if seg[..4] == [0x100, 0, 0, 0] {
        Some("discard-only address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_private_form() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "ff02::1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.200",
            "192.88.99.1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "100::1",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert!(forbidden_reason(ip).is_some(), "{s} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "172.32.0.1",
            "203.0.114.1",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(forbidden_reason(ip), None, "{s} should be allowed");
        }
    }
}
