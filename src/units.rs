//! Units, for people and for machines: byte sizes and latencies as an operator reads them, and times as the
//! Unix seconds every time in the JSON contract and in /metrics is. Pure; used by the view, events and exports.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serializer;

/// Bytes for people: 1.5 GiB, 20 MiB, 512 B.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds for people, at the precision that matters for etcd latencies.
pub fn human_seconds(secs: f64) -> String {
    if secs < 0.001 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else {
        format!("{secs:.2}s")
    }
}

/// A size as people write it: bytes (`209715200`), or a number with a unit, binary (`200MiB`, `1.5GiB`) or
/// decimal (`200MB`). The parser of byte-sized flags and settings.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 209715200, 200MiB or 8GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?}: too large"));
    }
    Ok(bytes as u64)
}

/// The longest interval or timeout that means anything here: a poll, a dial or a request that takes a day is a
/// typo (`500000000000years`), not a setting.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// A duration as people write it (`500ms`, `2s`, `1m30s`), longer than zero and at most [`MAX_DURATION`]; the
/// message says which rule was broken. The one parser of the flags and the configuration file.
/// A wait (between two members, for a lock): as [`parse_duration`], or zero (`0s`: no wait).
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    if humantime::parse_duration(text.trim()) == Ok(Duration::ZERO) {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("{text:?}: a duration cannot be negative"));
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 500ms, 10s, 1m)"))?;
    if d.is_zero() {
        return Err(format!("{text:?}: must be longer than zero"));
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{text:?}: longer than {}, the most a poll interval or a timeout may be",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// A time as Unix seconds; a time before 1970 (a broken clock) is 0.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Serialises a time as Unix seconds (a float), as every time in the JSON contract is.
pub fn serialize_unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(unix_seconds(*t))
}

/// `serialize_unix_seconds` for an optional time (`null` when absent).
pub fn serialize_opt_unix_seconds<S: Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&unix_seconds(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sizes_as_people_write_them() {
        assert_eq!(parse_bytes("209715200").unwrap(), 209_715_200);
        assert_eq!(parse_bytes("200MiB").unwrap(), 200 << 20);
        assert_eq!(parse_bytes("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert!(
            parse_bytes("200 furlongs")
                .unwrap_err()
                .contains("furlongs")
        );
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("").is_err());
    }
    use super::*;

    #[test]
    fn humane_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20 * 1024 * 1024 + 512 * 1024), "20.5 MiB");
        assert_eq!(human_seconds(0.000_250), "250µs");
        assert_eq!(human_seconds(0.0125), "12.5ms");
        assert_eq!(human_seconds(2.5), "2.50s");
    }

    #[test]
    fn durations_are_positive_and_at_most_a_day() {
        assert_eq!(parse_duration(" 1m30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        for (text, says) in [
            ("-1s", "cannot be negative"),
            ("0s", "longer than zero"),
            ("25h", "longer than 1day"),
            ("500000000000years", "\"500000000000years\""),
            ("often", "expected e.g. 500ms"),
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn times_are_unix_seconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        assert_eq!(unix_seconds(t), 1_700_000_000.5);
        assert_eq!(
            unix_seconds(UNIX_EPOCH - std::time::Duration::from_secs(1)),
            0.0
        );
    }
}

/// Serde for a time as Unix seconds (a float), both ways: the sidecar's and the lock owner's times.
pub mod unix_seconds_serde {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        crate::units::serialize_unix_seconds(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = f64::deserialize(d)?;
        // Read from files and from etcd, which anyone may have written: a time out of range is an error, not a
        // panic.
        Duration::try_from_secs_f64(secs.max(0.0))
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .ok_or_else(|| serde::de::Error::custom(format!("{secs}: not a time")))
    }
}
