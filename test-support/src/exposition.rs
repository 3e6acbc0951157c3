//! The Prometheus text exposition format (version 0.0.4), read back into samples.
//!
//! Reference: <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>.
//! A sample line is
//!
//! ```text
//! metric_name [ "{" label_name "=" `"` label_value `"` { "," ... } [ "," ] "}" ] value [ timestamp ]
//! ```
//!
//! Label values escape backslash, double quote and line feed as `\\`, `\"` and `\n`; they may
//! hold any other character, `,`, `}` and spaces included. Values are Go floats (`+Inf`,
//! `-Inf`, `NaN` included); the timestamp, when present, is integer milliseconds and is checked
//! but not kept. Lines whose first non-blank character is `#` (`HELP`, `TYPE`, comments) and
//! blank lines carry no sample.

use std::{collections::BTreeMap, fmt};

/// One sample of the exposition: a series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, suffix included (`..._bucket`, `..._count`).
    pub name: String,
    /// Label names to label values, unescaped.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    #[must_use]
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// Whether the sample is of metric `name` and has every `(label, value)` of `want`.
    #[must_use]
    pub fn matches(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.name == name && want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A line that is not valid text format: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line_number: usize,
    pub line: String,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} in {:?}",
            self.line_number, self.reason, self.line
        )
    }
}

impl std::error::Error for ParseError {}

/// Every sample of an exposition text, in order. Strict: one malformed line fails the whole
/// text, so a test notices an exposition Prometheus would reject instead of silently losing
/// series.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let sample = parse_line(trimmed).map_err(|reason| ParseError {
            line_number: index + 1,
            line: line.to_owned(),
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

/// Sum of the values of the samples of `name` whose labels include all of `want` (`PromQL`'s
/// `sum(name{want...})`); 0 when none match.
#[must_use]
pub fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.matches(name, want))
        .map(|s| s.value)
        .sum()
}

/// A cursor over one sample line.
struct Line<'a> {
    rest: &'a str,
}

impl<'a> Line<'a> {
    fn skip_blanks(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// Takes `want` if the line continues with it.
    fn eat(&mut self, want: char) -> bool {
        match self.rest.strip_prefix(want) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// The longest prefix of name characters; `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names,
    /// without `:` for label names.
    fn name(&mut self, colon: bool, what: &str) -> Result<&'a str, String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
        let end = self.rest.find(|c: char| !ok(c)).unwrap_or(self.rest.len());
        let name = &self.rest[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a {what} at {:?}", self.rest));
        }
        self.rest = &self.rest[end..];
        Ok(name)
    }

    /// A double-quoted label value, unescaped; the opening quote is already taken.
    fn quoted(&mut self) -> Result<String, String> {
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => {
                        return Err(format!("invalid escape `\\{other}` in a label value"));
                    }
                    None => break,
                },
                _ => value.push(c),
            }
        }
        Err("unterminated label value".to_owned())
    }

    /// The next blank-separated token.
    fn token(&mut self) -> &'a str {
        self.skip_blanks();
        let end = self.rest.find([' ', '\t']).unwrap_or(self.rest.len());
        let token = &self.rest[..end];
        self.rest = &self.rest[end..];
        token
    }
}

fn parse_line(text: &str) -> Result<Sample, String> {
    let mut line = Line { rest: text };
    let name = line.name(true, "metric name")?.to_owned();
    line.skip_blanks();
    let mut labels = BTreeMap::new();
    if line.eat('{') {
        loop {
            line.skip_blanks();
            if line.eat('}') {
                break;
            }
            let label = line.name(false, "label name")?;
            line.skip_blanks();
            if !line.eat('=') {
                return Err(format!("expected `=` after label {label}"));
            }
            line.skip_blanks();
            if !line.eat('"') {
                return Err(format!("expected `\"` to open the value of label {label}"));
            }
            let value = line.quoted()?;
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} given twice"));
            }
            line.skip_blanks();
            if line.eat('}') {
                break;
            }
            if !line.eat(',') {
                return Err(format!(
                    "expected `,` or `}}` after the value of label {label}"
                ));
            }
        }
    }
    let value_text = line.token();
    let value =
        parse_value(value_text).ok_or_else(|| format!("expected a value, found {value_text:?}"))?;
    let timestamp = line.token();
    if !timestamp.is_empty() && timestamp.parse::<i64>().is_err() {
        return Err(format!(
            "expected an integer timestamp in ms, found {timestamp:?}"
        ));
    }
    line.skip_blanks();
    if !line.rest.is_empty() {
        return Err(format!("unexpected {:?} after the sample", line.rest));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A value as Go's `strconv.ParseFloat` reads it for the exposition: decimal or exponent
/// notation, `+Inf`/`-Inf`/`Inf` and `NaN` in any case. Rust also reads `infinity`; the
/// exposition never writes that, so accepting it loses nothing.
fn parse_value(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
#[expect(
    clippy::float_cmp,
    reason = "the expected values are exact: small integers and infinities"
)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample {
        let mut samples = parse_metrics(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(samples.len(), 1, "one sample in {line:?}: {samples:?}");
        samples.remove(0)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP schedlat_events_total Events.\n\
                    # TYPE schedlat_events_total counter\n\
                    schedlat_events_total 42\n\
                    \n\
                    schedlat_runqueue_latency_seconds_bucket{cgroup=\"/a\",process=\"p\",le=\"0.001048576\"} 7\n";
        let samples = parse_metrics(text).unwrap();
        assert_eq!(
            samples,
            vec![
                Sample {
                    name: "schedlat_events_total".into(),
                    labels: BTreeMap::new(),
                    value: 42.0,
                },
                Sample {
                    name: "schedlat_runqueue_latency_seconds_bucket".into(),
                    labels: labels(&[("cgroup", "/a"), ("process", "p"), ("le", "0.001048576")]),
                    value: 7.0,
                },
            ]
        );
    }

    #[test]
    fn unescapes_label_values() {
        let s = one(r#"m{process="a\"b\\c\nd",x="\\\\"} 1"#);
        assert_eq!(s.label("process"), Some("a\"b\\c\nd"));
        assert_eq!(s.label("x"), Some("\\\\"));
    }

    #[test]
    fn label_values_may_hold_separators_and_spaces() {
        let s = one(r#"m{a="x\",y=\"z", b="} {", c="with space",} 2.5"#);
        assert_eq!(
            s.labels,
            labels(&[("a", "x\",y=\"z"), ("b", "} {"), ("c", "with space")])
        );
        assert!((s.value - 2.5).abs() < f64::EPSILON);
    }

    #[test]
    fn reads_special_values_and_timestamps() {
        assert_eq!(one("m{le=\"+Inf\"} +Inf").value, f64::INFINITY);
        assert_eq!(one("m -Inf").value, f64::NEG_INFINITY);
        assert!(one("m NaN").value.is_nan());
        assert!((one("m 1.5e-3 1712345678901").value - 1.5e-3).abs() < f64::EPSILON);
        assert_eq!(one("m{} 3").labels, BTreeMap::new());
        assert_eq!(one("  m\t4  ").value, 4.0, "blanks around tokens");
    }

    #[test]
    fn rejects_malformed_lines_with_where_and_why() {
        for (text, why) in [
            ("m", "expected a value"),
            ("m x", "expected a value"),
            ("m{a=\"1\" 2", "expected `,` or `}`"),
            ("m{a=1} 2", "expected `\"`"),
            ("m{a=\"1} 2", "unterminated label value"),
            ("m{a=\"\\t\"} 2", "invalid escape"),
            ("m{a=\"1\",a=\"2\"} 3", "given twice"),
            ("m 1 1.5", "integer timestamp"),
            ("m 1 2 3", "after the sample"),
            ("9m 1", "metric name"),
        ] {
            let err = parse_metrics(&format!("ok 1\n{text}\n"))
                .expect_err(&format!("{text:?} should be rejected"));
            assert_eq!(err.line_number, 2, "{err}");
            assert!(
                err.reason.contains(why),
                "{text:?}: expected a reason with {why:?}, got {err}"
            );
        }
    }

    #[test]
    fn sums_the_matching_series() {
        let samples = parse_metrics(
            "w{cgroup=\"/a\",process=\"p\"} 1\n\
             w{cgroup=\"/a\",process=\"q\"} 2\n\
             w{cgroup=\"/b\",process=\"p\"} 4\n\
             other{cgroup=\"/a\"} 8\n",
        )
        .unwrap();
        assert_eq!(sum(&samples, "w", &[]), 7.0);
        assert_eq!(sum(&samples, "w", &[("cgroup", "/a")]), 3.0);
        assert_eq!(
            sum(&samples, "w", &[("cgroup", "/a"), ("process", "p")]),
            1.0
        );
        assert_eq!(sum(&samples, "w", &[("cgroup", "/c")]), 0.0);
        assert_eq!(sum(&samples, "w", &[("missing", "")]), 0.0);
    }
}
