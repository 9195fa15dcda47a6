//! Byte sizes as people type them: `4096`, `10MB`, `100MiB`, `1.5GiB`.
//!
//! Decimal units (KB, MB, GB, TB) are powers of 1000 and binary units (KiB,
//! MiB, GiB, TiB) powers of 1024, case-insensitively. A bare `K`, `M` or `G`
//! is refused rather than guessed at, since tools disagree on what it means.

/// Units understood after the number, with their multipliers.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

/// Parses a byte size; the error is a one-line reason fit for clap.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            format!("unknown unit in {text:?}: use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB")
        })?;
    if number.is_empty() {
        return Err(format!("{text:?} has no number"));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    // A fraction such as 1.5GiB: f64 is exact to far below a byte at these scales.
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// A size for people: `1.00 GiB`, `64.0 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const STEPS: &[(&str, u64)] = &[("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, unit) in STEPS {
        if bytes >= *unit {
            let value = bytes as f64 / *unit as f64;
            return if value >= 100.0 {
                format!("{value:.0} {name}")
            } else if value >= 10.0 {
                format!("{value:.1} {name}")
            } else {
                format!("{value:.2} {name}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        let cases: &[(&str, u64)] = &[
            ("4096", 4096),
            ("0", 0),
            ("12B", 12),
            ("10MB", 10_000_000),
            ("10mb", 10_000_000),
            ("100MiB", 100 << 20),
            ("100 MiB", 100 << 20),
            ("1GiB", 1 << 30),
            ("1gib", 1 << 30),
            ("1.5GiB", 3 << 29),
            ("0.5KiB", 512),
            ("2TB", 2_000_000_000_000),
            ("4KiB", 4096),
            ("  256MiB ", 256 << 20),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn refuses_bad_sizes() {
        for text in [
            "",
            "MiB",
            "1.2.3MiB",
            "10M",
            "10k",
            "1 GiBs",
            "-1",
            "20000000TiB",
            "1e3",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(64 << 20), "64.0 MiB");
        assert_eq!(format_size(1 << 30), "1.00 GiB");
        assert_eq!(format_size(256 << 20), "256 MiB");
    }
}
