//! Units, for people and for machines: byte sizes and latencies as an operator reads them, and times as the
//! Unix seconds every time in the JSON contract and in /metrics is. Pure; used by the view, events and exports.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// A time as Unix seconds; a time before 1970 (a broken clock) is 0.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Serialises a time as Unix seconds (a float), as every time in the JSON contract is.
pub fn serialize_unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(unix_seconds(*t))
}

#[cfg(test)]
mod tests {
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
    fn times_are_unix_seconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        assert_eq!(unix_seconds(t), 1_700_000_000.5);
        assert_eq!(
            unix_seconds(UNIX_EPOCH - std::time::Duration::from_secs(1)),
            0.0
        );
    }
}
