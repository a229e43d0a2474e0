//! Value parsers of the command line: durations, time windows, sizes and addresses. Each
//! returns a one-line message clap shows as a usage error.

/// A futex address: hex `0x…` or decimal.
pub fn addr(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("not an address: {s:?} (e.g. 0x7f12a4c0)"))
}

/// "1.5", "200ms", "10us", "500ns", "2s" -> ns (a bare number is seconds).
pub fn duration_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("ns") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e9)
    } else {
        (s, 1e9)
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 1.5, 200ms, 10us)"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok((x * mult) as u64)
}

/// `--svg[=OUT]`'s value: empty (the bare flag, which clap's path parser would refuse) means
/// "beside the trace".
#[allow(clippy::unnecessary_wraps, reason = "clap's value_parser signature")]
pub fn svg_output(s: &str) -> Result<std::path::PathBuf, String> {
    Ok(std::path::PathBuf::from(s))
}

/// A positive duration (see [`duration_ns`]), e.g. for `record --duration`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    match duration_ns(s)? {
        0 => Err(format!("not a positive duration: {s:?}")),
        ns => Ok(std::time::Duration::from_nanos(ns)),
    }
}

/// A time window relative to the trace's start: ns from the start, either end open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelativeWindow {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

impl RelativeWindow {
    /// As absolute times, for a trace that started at `start_ns`.
    pub fn absolute(self, start_ns: u64) -> (u64, u64) {
        (
            start_ns + self.from.unwrap_or(0),
            self.to.map_or(u64::MAX, |b| start_ns.saturating_add(b)),
        )
    }
}

/// `A..B`, either side a duration relative to the trace's start, either side may be empty.
pub fn window(s: &str) -> Result<RelativeWindow, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("--window wants A..B, got {s:?}"))?;
    let side = |v: &str| {
        if v.trim().is_empty() {
            Ok(None)
        } else {
            duration_ns(v).map(Some)
        }
    };
    let (from, to) = (side(a)?, side(b)?);
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return Err(format!("--window {s}: start is after end"));
        }
    }
    Ok(RelativeWindow { from, to })
}

/// A ring-buffer size: bytes with K/M/G suffixes, 4K..=1G, rounded up to a power of two.
pub fn size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 4096, 256K, 16M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    if !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!("buffer size must be between 4K and 1G, got {s}"));
    }
    Ok(bytes.next_power_of_two() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_durations_for_record() {
        assert_eq!(duration("10s"), Ok(std::time::Duration::from_secs(10)));
        assert_eq!(duration("2.5"), Ok(std::time::Duration::from_millis(2_500)));
        assert!(duration("0").is_err());
        assert!(duration("0s").is_err());
        assert!(duration("-1").is_err());
    }

    #[test]
    fn durations_take_every_unit_and_default_to_seconds() {
        assert_eq!(duration_ns("1.5"), Ok(1_500_000_000));
        assert_eq!(duration_ns("2s"), Ok(2_000_000_000));
        assert_eq!(duration_ns("200ms"), Ok(200_000_000));
        assert_eq!(duration_ns("10us"), Ok(10_000));
        assert_eq!(duration_ns("10µs"), Ok(10_000));
        assert_eq!(duration_ns(" 500ns "), Ok(500));
        for bad in ["", "ms", "-1s", "1x", "inf", "NaN"] {
            assert!(duration_ns(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn windows_may_be_open_on_either_side_but_not_reversed() {
        let w = |from, to| Ok(RelativeWindow { from, to });
        assert_eq!(
            window("1.5..3"),
            w(Some(1_500_000_000), Some(3_000_000_000))
        );
        assert_eq!(window("200ms.."), w(Some(200_000_000), None));
        assert_eq!(window("..2s"), w(None, Some(2_000_000_000)));
        assert_eq!(window(".."), w(None, None));
        assert_eq!(
            window("1s..2s").unwrap().absolute(100),
            (1_000_000_100, 2_000_000_100)
        );
        assert_eq!(window("1s..").unwrap().absolute(0).1, u64::MAX);
        assert!(window("3..1").unwrap_err().contains("start is after end"));
        assert!(window("1-2").unwrap_err().contains("A..B"));
    }

    #[test]
    fn sizes_round_up_to_a_power_of_two_within_bounds() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("256K"), Ok(256 << 10));
        assert_eq!(size("16m"), Ok(16 << 20));
        assert_eq!(size("5000"), Ok(8192));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert!(size("1K").is_err());
        assert!(size("2G").is_err());
        assert!(size("lots").is_err());
        assert!(size("99999999999999999999G").is_err());
    }

    #[test]
    fn addresses_are_hex_or_decimal() {
        assert_eq!(addr("0x7f12a4c0"), Ok(0x7f12_a4c0));
        assert_eq!(addr("0X10"), Ok(16));
        assert_eq!(addr("4096"), Ok(4096));
        assert!(addr("0xzz").is_err());
    }
}
