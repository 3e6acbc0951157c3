//! Parsing durations given on the command line ("1ms", "10s", "250us", "1.5s").

/// What every error message suggests.
const EXAMPLES: &str = "write a number and a unit, e.g. 500us, 1ms, 10s";

/// Parses a duration with a unit (ns, us/µs, ms, s, m, h) into nanoseconds. A bare `0` is
/// accepted; other bare numbers are rejected because their unit would be a guess.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration: {EXAMPLES}"));
    }
    if text == "0" {
        return Ok(0);
    }
    if let Some(rest) = text.strip_prefix('-') {
        return Err(
            if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                format!("`{text}`: negative durations are not allowed ({EXAMPLES})")
            } else {
                // An option name where a value was expected, e.g. `--duration --format json`.
                format!("`{text}` is not a duration: {EXAMPLES}")
            },
        );
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit: {EXAMPLES}"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` does not start with a number: {EXAMPLES}"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: `{number}` is not a number ({EXAMPLES})"))?;
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

/// clap value parser: a duration as `std::time::Duration` (0 allowed, e.g. a threshold).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration_ns(text).map(std::time::Duration::from_nanos)
}

/// clap value parser for how long something runs: 0 (or less than 1ns) is refused.
pub fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration_ns(text)? {
        0 => Err(format!(
            "`{}`: the duration must be greater than 0, e.g. 500ms or 10s",
            text.trim()
        )),
        ns => Ok(std::time::Duration::from_nanos(ns)),
    }
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
        assert_eq!(parse_duration_ns(" 10 s "), Ok(10_000_000_000));
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for bad in [
            "",
            "10",
            "ms",
            "1.2.3ms",
            "5 parsecs",
            "-1ms",
            "1e400s",
            "+5s",
        ] {
            let err = parse_duration_ns(bad).expect_err(bad);
            assert!(!err.is_empty());
            assert!(!err.contains("``"), "an empty quote says nothing: {err}");
        }
        let says = |text: &str, needle: &str| {
            let err = parse_duration_ns(text).expect_err(text);
            assert!(
                err.contains(needle),
                "{text}: expected {needle:?} in {err:?}"
            );
            assert!(err.contains("e.g.") || err.contains("use ns"), "{err}");
        };
        says("10", "no unit");
        says("-5s", "negative durations are not allowed");
        says("-.5s", "negative durations are not allowed");
        says("--format", "`--format` is not a duration");
        says("+5s", "does not start with a number");
        says("", "empty duration");
        says("1.2.3ms", "`1.2.3` is not a number");
        says("5 parsecs", "unknown unit `parsecs`");
    }

    #[test]
    fn run_lengths_must_be_positive() {
        assert_eq!(
            parse_positive_duration("2s"),
            Ok(std::time::Duration::from_secs(2))
        );
        for zero in ["0", "0s", "0.0ms", "0.1ns"] {
            let err = parse_positive_duration(zero).expect_err(zero);
            assert!(err.contains("must be greater than 0"), "{zero}: {err}");
        }
        assert!(
            parse_positive_duration("-5s")
                .unwrap_err()
                .contains("negative")
        );
        assert_eq!(
            parse_duration("0"),
            Ok(std::time::Duration::ZERO),
            "a 0 threshold is fine"
        );
    }
}
