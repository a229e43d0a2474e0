//! Durations for people: the unit chosen by size, three significant digits or so.

/// `ns` as "850 ns", "12.3 µs", "4.05 ms", "1.25 s".
pub fn duration(ns: u64) -> String {
    let x = ns as f64;
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{} µs", sig3(x / 1e3)),
        1_000_000..=999_999_999 => format!("{} ms", sig3(x / 1e6)),
        _ => format!("{} s", sig3(x / 1e9)),
    }
}

/// Three significant digits for values in [1, 1000): 1.25, 12.3, 123.
fn sig3(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_gets_its_unit() {
        assert_eq!(duration(0), "0 ns");
        assert_eq!(duration(850), "850 ns");
        assert_eq!(duration(12_340), "12.3 µs");
        assert_eq!(duration(1_000_000), "1.00 ms");
        assert_eq!(duration(4_051_000), "4.05 ms");
        assert_eq!(duration(250_000_000), "250 ms");
        assert_eq!(duration(1_250_000_000), "1.25 s");
    }
}
