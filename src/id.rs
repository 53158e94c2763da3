//! Member and cluster ids, printed as etcdctl prints them in `-w table`: 16 lowercase hex digits.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub u64);

impl Id {
    /// Parses the hex form etcd uses in metric labels (`To="8211f1d0f64f3269"`), padded or not.
    pub fn from_hex(text: &str) -> Option<Id> {
        u64::from_str_radix(text.trim(), 16).ok().map(Id)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read back from our own JSON (a snapshot's sidecar): the same 16 hex digits.
impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Id::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a hex id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_sixteen_lowercase_hex_digits() {
        assert_eq!(Id(0xabc).to_string(), "0000000000000abc");
        assert_eq!(
            serde_json::to_string(&Id(u64::MAX)).unwrap(),
            "\"ffffffffffffffff\""
        );
        assert_eq!(
            Id::from_hex("8211f1d0f64f3269"),
            Some(Id(0x8211f1d0f64f3269))
        );
        assert_eq!(Id::from_hex("zz"), None);
    }
}
