//! Names are bytes. A process name (`task_struct::comm`, `/proc/<pid>/comm`) is whatever bytes
//! its owner chose with `prctl(PR_SET_NAME)` or by exec'ing a file of that name: not
//! necessarily UTF-8, and free to hold newlines or terminal escape sequences; so is a cgroup's
//! directory name. Every such name that schedlat shows (trace text and JSON, incidents, metric
//! label values, flame graphs) goes through [`escape_bytes`] once, where it is read, and
//! terminal output of text read back from files passes through [`escape`] again, which leaves
//! escaped names unchanged.
//!
//! The escaping, as documented in the README: valid UTF-8 is kept except control characters;
//! each byte of a control character (C0 U+0000..U+001F, DEL U+007F, C1 U+0080..U+009F) and each
//! byte that is not part of valid UTF-8 is written `\xNN` (two lowercase hex digits). A
//! backslash is kept as it is, so the escaping is idempotent and names without control
//! characters read exactly as before; the price is that a name that literally contains the four
//! characters `\xff` reads the same as one holding the byte 0xff. That cannot be used to hide
//! anything: a process could name itself anything printable anyway.

use std::{borrow::Cow, fmt::Write as _};

/// A name's bytes as printable UTF-8 text (see the module documentation).
#[must_use]
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            // `char::is_control` is exactly Unicode's Cc: C0, DEL and C1.
            if c.is_control() {
                let mut utf8 = [0u8; 4];
                push_hex(&mut out, c.encode_utf8(&mut utf8).as_bytes());
            } else {
                out.push(c);
            }
        }
        push_hex(&mut out, chunk.invalid());
    }
    out
}

/// Text made safe for a terminal by the same escaping; borrowed when nothing needed escaping
/// (always so for a name that was escaped already).
#[must_use]
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(escape_bytes(text.as_bytes()))
    } else {
        Cow::Borrowed(text)
    }
}

/// Several lines of bytes for a terminal: each line escaped, the line breaks kept.
#[must_use]
pub fn escape_lines(bytes: &[u8]) -> String {
    bytes
        .split(|&b| b == b'\n')
        .map(escape_bytes)
        .collect::<Vec<_>>()
        .join("\n")
}

/// JSON text for a terminal. `serde_json` writes C0 controls in strings as `\u00XX` but DEL and
/// C1 raw; this writes those as `\u00XX` too, which is the same JSON value. (Outside strings,
/// JSON text has no such characters.)
#[must_use]
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    // Raw newlines, carriage returns and tabs only occur between tokens (in strings serde_json
    // escapes them), where they are JSON whitespace.
    let needs_escape = |c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(needs_escape) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "\\x{b:02x}");
    }
}

/// The contents of `/proc/<pid>/comm` (or `.../task/<tid>/comm`): the name and one newline the
/// kernel appends. Only that newline is removed: a name may end in a newline of its own.
#[must_use]
pub fn from_comm_file(contents: &[u8]) -> String {
    escape_bytes(contents.strip_suffix(b"\n").unwrap_or(contents))
}

/// The `Name:` value of a `/proc/<pid>/status` text, unescaped and escaped again.
///
/// The kernel writes it with `seq_escape_str(.., ESCAPE_SPACE | ESCAPE_SPECIAL, "\n\\")`
/// (`proc_task_name` in fs/proc/array.c): a newline becomes `\n` and a backslash `\\`, every
/// other byte is raw. The value is not trimmed, because spaces and tabs are part of a name.
#[must_use]
pub fn from_status(status: &[u8]) -> Option<String> {
    let raw = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Name:\t"))?;
    let mut name = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            name.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => name.push(b'\n'),
            Some(&other) => name.push(other),
            None => name.push(b'\\'),
        }
    }
    Some(escape_bytes(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_utf8_is_kept() {
        for name in [
            "sshd",
            "kworker/0:1H-kblockd",
            "naïve 名前",
            "a\\b",
            "(sd-pam)",
            "",
        ] {
            assert_eq!(escape_bytes(name.as_bytes()), name);
            assert!(matches!(escape(name), Cow::Borrowed(_)), "{name}");
        }
    }

    #[test]
    fn invalid_utf8_and_control_characters_become_hex() {
        assert_eq!(escape_bytes(b"bad\xff\x1b[31m"), "bad\\xff\\x1b[31m");
        assert_eq!(
            escape_bytes(b"a\nb\rc\td\x7f\x00"),
            "a\\x0ab\\x0dc\\x09d\\x7f\\x00"
        );
        // C1 controls are valid UTF-8 (U+009B is CSI to some terminals): their bytes are shown.
        assert_eq!(escape_bytes("x\u{9b}31m".as_bytes()), "x\\xc2\\x9b31m");
        // A multibyte character cut by the kernel's 16-byte limit.
        assert_eq!(escape_bytes(b"name\xe5\x90"), "name\\xe5\\x90");
        assert_eq!(escape_bytes(b"\xc3("), "\\xc3(");
        assert_eq!(escape("tab\there"), "tab\\x09here");
    }

    #[test]
    fn escaped_text_is_printable_and_escaping_is_idempotent() {
        let mut all = Vec::new();
        for b in 0..=255u8 {
            all.extend_from_slice(&[b'.', b]);
        }
        all.extend_from_slice("\u{85}\u{9f}\u{a0}é\u{202e}".as_bytes());
        let once = escape_bytes(&all);
        assert!(!once.chars().any(char::is_control), "{once}");
        assert!(once.bytes().all(|b| b >= 0x20 && b != 0x7f), "{once}");
        assert_eq!(escape(&once), once);
        assert_eq!(escape_bytes(once.as_bytes()), once);
    }

    #[test]
    fn lines_and_json_for_a_terminal() {
        assert_eq!(escape_lines(b"a\x1b\nb\xff\n"), "a\\x1b\nb\\xff\n");
        let value = serde_json::json!({"comm": "x\u{1b}\u{7f}\u{9b}y\n"});
        let pretty = serde_json::to_string_pretty(&value).expect("json");
        let safe = json_for_terminal(&pretty);
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value, "the same value");
        assert!(matches!(json_for_terminal("{\"a\": 1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn comm_file_loses_only_the_kernels_newline() {
        assert_eq!(from_comm_file(b"bash\n"), "bash");
        assert_eq!(from_comm_file(b"two\n\n"), "two\\x0a");
        assert_eq!(from_comm_file(b"bad\xff\n"), "bad\\xff");
        assert_eq!(from_comm_file(b""), "");
    }

    #[test]
    fn status_name_is_unescaped_then_escaped() {
        // What the kernel wrote for prctl(PR_SET_NAME, "a\\b\n\tc\xff\x1b[3"), read on 6.18.
        let status = b"Name:\ta\\\\b\\n\tc\xff\x1b[3\nUmask:\t0022\nTgid:\t7\n";
        assert_eq!(
            from_status(status).as_deref(),
            Some("a\\b\\x0a\\x09c\\xff\\x1b[3")
        );
        assert_eq!(
            from_status(b"Name:\t  spaced \nTgid:\t1\n").as_deref(),
            Some("  spaced ")
        );
        assert_eq!(from_status(b"Tgid:\t1\n"), None);
    }
}
