//! Parsing durations given on the command line ("1ms", "10s", "250us", "1.5s").

/// Parses a duration with a unit (ns, us/µs, ms, s, m, h) into nanoseconds. A bare `0` is
/// accepted; other bare numbers are rejected because their unit would be a guess.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 500us, 1ms, 10s"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: `{number}` is not a number"))?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ns, us, ms, s, m or h)"
            ));
        }
    };
    let ns = value * scale;
    if !ns.is_finite() || ns >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    Ok(ns.round() as u64)
}

/// clap value parser: a duration as `std::time::Duration`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration_ns(text).map(std::time::Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration_ns("1ms"), Ok(1_000_000));
        assert_eq!(parse_duration_ns("250us"), Ok(250_000));
        assert_eq!(parse_duration_ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration_ns("0"), Ok(0));
        assert_eq!(parse_duration_ns("10ns"), Ok(10));
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for bad in ["", "10", "ms", "1.2.3ms", "5 parsecs", "-1ms", "1e400s"] {
            let err = parse_duration_ns(bad).expect_err(bad);
            assert!(!err.is_empty());
        }
        assert!(parse_duration_ns("10").unwrap_err().contains("no unit"));
    }
}
