//! Small value types of the rack file that parse from strings: CIDR addresses, TCP/UDP port
//! ranges, MAC addresses and fence-agent parameter values. Each deserializes from its TOML
//! form with an error message that says what was expected, so a bad value is reported on
//! its own line and column.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// An interface address with its prefix length, written `"10.99.0.254/24"` or
/// `"2001:db8::1/64"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// The IPv4 address, if this is an IPv4 CIDR.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    /// Whether `ip` lies in this address's subnet.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix_len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix_len as u32)
                };
                (u32::from(a) & mask) == (u32::from(*b) & mask)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix_len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix_len as u32)
                };
                (u128::from(a) & mask) == (u128::from(*b) & mask)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("\"{s}\" needs a prefix length, e.g. \"{s}/24\""))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("\"{s}\": \"{a}\" is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len: u8 = l.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
            format!("\"{s}\": prefix length must be between 0 and {max} (got \"{l}\")")
        })?;
        Ok(Cidr { addr, prefix_len })
    }
}

/// Deserializes a `FromStr` type from a string inside the deserializer's call, so that an
/// error is located on the string itself (an array element, not the whole array).
fn de_from_str<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: FromStr<Err = String>> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(V(expecting, std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_from_str(d, "an address with a prefix length, e.g. \"10.0.0.1/24\"")
    }
}

/// A TCP/UDP port or an inclusive range of ports: `80` or `"8000-8010"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn port_number(s: &str, whole: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!(
            "\"{whole}\": a port must be an integer between 1 and 65535"
        )),
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('-') {
            None => port_number(s, s).map(PortRange::single),
            Some((a, b)) => {
                let (first, last) = (port_number(a, s)?, port_number(b, s)?);
                if first > last {
                    return Err(format!(
                        "\"{s}\": the range is empty (first port is above the last)"
                    ));
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (80) or a range string (\"8000-8010\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                if (1..=65535).contains(&v) {
                    Ok(PortRange::single(v as u16))
                } else {
                    Err(E::custom(format!(
                        "a port must be between 1 and 65535 (got {v})"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An Ethernet address, written `"02:00:00:00:00:01"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("\"{s}\" is not a MAC address (six hex bytes, e.g. \"02:00:00:00:00:01\")");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(out))
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_from_str(d, "a MAC address, e.g. \"02:00:00:00:00:01\"")
    }
}

/// Fence-agent parameters: a table whose values may be written as strings, integers or
/// booleans (`lanplus = 1`, `ipport = 623`, `ssl_insecure = true`); each is passed to the
/// agent as the `key=value` line with the value's text.
pub(crate) fn de_fence_parameters<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    struct Value(String);
    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Value;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string, an integer or a boolean")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                    Ok(Value(v.to_owned()))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                    Ok(Value(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                    Ok(Value(v.to_string()))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                    // fence-agents take "1"/"0" as well as "on"/"off"; pass the canonical digits.
                    Ok(Value(if v { "1".into() } else { "0".into() }))
                }
            }
            d.deserialize_any(V)
        }
    }
    let m = std::collections::BTreeMap::<String, Value>::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// `[forward] pairs`: an array of two-element arrays of names; a pair with another length
/// is an error located on that pair.
pub(crate) fn de_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[String; 2]>, D::Error> {
    struct Pair([String; 2]);
    impl<'de> Deserialize<'de> for Pair {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Pair;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a pair of two port names, e.g. [\"west\", \"east\"]")
                }
                fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
                    let a: String = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                    let b: String = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                    let mut n = 2;
                    while seq.next_element::<de::IgnoredAny>()?.is_some() {
                        n += 1;
                    }
                    if n != 2 {
                        return Err(de::Error::invalid_length(n, &self));
                    }
                    Ok(Pair([a, b]))
                }
            }
            d.deserialize_seq(V)
        }
    }
    Ok(Vec::<Pair>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_contains() {
        let c: Cidr = "10.99.0.254/24".parse().unwrap();
        assert_eq!(c.ipv4(), Some(Ipv4Addr::new(10, 99, 0, 254)));
        assert!(c.contains(&"10.99.0.7".parse().unwrap()));
        assert!(!c.contains(&"10.98.0.7".parse().unwrap()));
        assert!("10.0.0.1"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("prefix length"));
        assert!("10.0.0.1/33".parse::<Cidr>().is_err());
        let v6: Cidr = "2001:db8::1/64".parse().unwrap();
        assert!(v6.contains(&"2001:db8::99".parse().unwrap()));
        assert_eq!(v6.to_string(), "2001:db8::1/64");
    }

    #[test]
    fn port_ranges() {
        assert_eq!("80".parse::<PortRange>().unwrap(), PortRange::single(80));
        let r: PortRange = "8000-8010".parse().unwrap();
        assert!(r.contains(8005) && !r.contains(8011));
        assert!(r.overlaps(&PortRange::single(8010)));
        assert!("0".parse::<PortRange>().is_err());
        assert!("90-80".parse::<PortRange>().is_err());
        assert_eq!(r.to_string(), "8000-8010");
    }

    #[test]
    fn mac_addresses() {
        let m: MacAddr = "02:00:00:AA:bb:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:aa:bb:01");
        assert!("02:00:00:aa:bb".parse::<MacAddr>().is_err());
        assert!("02:00:00:aa:bb:zz".parse::<MacAddr>().is_err());
    }
}
