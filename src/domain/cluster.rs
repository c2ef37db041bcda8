//! A cluster's identity: a random 128-bit ID chosen once, by the first
//! leader of a new cluster, and written through the log
//! ([`crate::domain::Operation::SetClusterId`]), so that every node, every
//! snapshot and every backup of the cluster holds the same one. Nodes send
//! it with every message to each other and refuse a message of another
//! cluster (see DESIGN.md, "Cluster identity").

use serde::{Deserialize, Serialize};

/// A cluster's ID: 128 random bits, never zero.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// A new random ID.
    pub fn random() -> ClusterId {
        loop {
            let id: u128 = rand::random();
            if id != 0 {
                return ClusterId(id);
            }
        }
    }
}

/// 32 lowercase hex digits.
impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = String;

    /// 32 hex digits (either case), not all zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a cluster ID (32 hex digits)"));
        }
        match u128::from_str_radix(s, 16) {
            Ok(0) => Err("the cluster ID 0 is not valid".into()),
            Ok(v) => Ok(ClusterId(v)),
            Err(e) => Err(format!("{s:?} is not a cluster ID: {e}")),
        }
    }
}

impl crate::encoding::Record for ClusterId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_prints_as_32_hex_digits_and_parses_back() {
        let id = ClusterId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(id.to_string().parse::<ClusterId>(), Ok(id));
        assert_eq!("0123456789ABCDEF0011223344556677".parse::<ClusterId>(), Ok(id));
        assert!("".parse::<ClusterId>().is_err());
        assert!("0".repeat(32).parse::<ClusterId>().is_err());
        assert!("g".repeat(32).parse::<ClusterId>().is_err());
        assert!("+123456789abcdef0011223344556677".parse::<ClusterId>().is_err());
        let random = ClusterId::random();
        assert_ne!(random.0, 0);
        assert_eq!(random.to_string().parse::<ClusterId>(), Ok(random));
    }

    #[test]
    fn an_id_round_trips_through_the_record_encoding() {
        let id = ClusterId(u128::MAX - 5);
        let bytes = crate::encoding::encode(&id);
        assert_eq!(bytes.len(), 1 + 16);
        assert_eq!(crate::encoding::decode::<ClusterId>(&bytes).unwrap(), id);
    }
}
