//! The terminal of `schedlat top`: non-canonical input without echo, the alternate screen,
//! the window's size, and keys. Plain termios and ANSI escapes (no curses library): what
//! every terminal emulator and tmux understand. Ctrl-C still sends SIGINT (ISIG is kept), so
//! the signal handler ends the loop and the terminal is restored on the way out.

use std::{
    io::{self, Write},
    os::fd::RawFd,
    time::Duration,
};

use anyhow::{Context as _, Result};

/// A key the view reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Tab,
}

/// Parses the bytes read from the terminal into keys (unknown escape sequences are skipped).
#[must_use]
pub fn parse_keys(bytes: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            // CSI: parameters, then a final byte in 0x40..=0x7e.
            let mut end = i + 2;
            while end < bytes.len() && !(0x40..=0x7e).contains(&bytes[end]) {
                end += 1;
            }
            let params = &bytes[i + 2..end.min(bytes.len())];
            let key = match (params, bytes.get(end)) {
                (b"", Some(b'A')) => Some(Key::Up),
                (b"", Some(b'B')) => Some(Key::Down),
                (b"", Some(b'H')) | (b"1" | b"7", Some(b'~')) => Some(Key::Home),
                (b"", Some(b'F')) | (b"4" | b"8", Some(b'~')) => Some(Key::End),
                (b"5", Some(b'~')) => Some(Key::PageUp),
                (b"6", Some(b'~')) => Some(Key::PageDown),
                _ => None,
            };
            keys.extend(key);
            i = end + 1;
        } else if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'O') {
            // SS3 (application cursor keys).
            match bytes.get(i + 2) {
                Some(b'A') => keys.push(Key::Up),
                Some(b'B') => keys.push(Key::Down),
                Some(b'H') => keys.push(Key::Home),
                Some(b'F') => keys.push(Key::End),
                _ => {}
            }
            i += 3;
        } else {
            match bytes[i] {
                b'\t' => keys.push(Key::Tab),
                b @ 0x20..=0x7e => keys.push(Key::Char(char::from(b))),
                _ => {}
            }
            i += 1;
        }
    }
    keys
}

/// Whether `fd` is a terminal.
#[must_use]
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal while `top` runs; restores it when dropped.
pub struct Terminal {
    saved: libc::termios,
}

impl Terminal {
    /// Non-canonical mode without echo, the alternate screen, the cursor hidden.
    pub fn enter() -> Result<Self> {
        // SAFETY: tcgetattr fills a termios struct the size libc declares.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &raw mut saved) } != 0 {
            return Err(io::Error::last_os_error()).context("reading the terminal's settings");
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw const raw) } != 0 {
            return Err(io::Error::last_os_error()).context("setting the terminal's mode");
        }
        let terminal = Self { saved };
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")?;
        out.flush()?;
        Ok(terminal)
    }

    /// (columns, rows), or 80x24 when the terminal does not say.
    #[must_use]
    pub fn size() -> (usize, usize) {
        // SAFETY: TIOCGWINSZ writes a winsize struct.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &raw mut size) } == 0;
        if ok && size.ws_col > 0 && size.ws_row > 0 {
            (usize::from(size.ws_col), usize::from(size.ws_row))
        } else {
            (80, 24)
        }
    }

    /// Clears the screen (after a resize, lines drawn for the old width may be left).
    pub fn clear() -> Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[H\x1b[2J")?;
        out.flush()?;
        Ok(())
    }

    /// Draws `lines` from the top left, each cut to `width`; line `highlight` in reverse video.
    pub fn draw(lines: &[String], width: usize, highlight: Option<usize>) -> Result<()> {
        let mut frame = String::from("\x1b[H");
        // More lines than rows would scroll the screen and push the header out.
        let lines = &lines[..lines.len().min(Self::size().1)];
        for (i, line) in lines.iter().enumerate() {
            let text = super::model::fit(line, width);
            if highlight == Some(i) {
                frame.push_str("\x1b[7m");
                frame.push_str(&text);
                frame.push_str(&" ".repeat(width.saturating_sub(text.chars().count())));
                frame.push_str("\x1b[0m");
            } else {
                frame.push_str(&text);
                frame.push_str("\x1b[K");
            }
            if i + 1 < lines.len() {
                frame.push_str("\r\n");
            }
        }
        frame.push_str("\x1b[J");
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        Ok(())
    }

    /// Waits up to `timeout` for input and returns the keys pressed (none on timeout or when a
    /// signal interrupted the wait).
    pub fn read_keys(timeout: Duration) -> Vec<Key> {
        let mut fds = [libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        }];
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
        if ready <= 0 {
            return Vec::new();
        }
        let mut buf = [0u8; 64];
        // SAFETY: reads into a buffer of the given size.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // End of input (the terminal went away): nothing more will come.
            std::thread::sleep(timeout);
            return Vec::new();
        }
        parse_keys(&buf[..n as usize])
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        // SAFETY: restores the settings read at `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw const self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_escape_sequences() {
        assert_eq!(
            parse_keys(b"q\t9\x1b[A\x1b[B\x1b[5~\x1b[6~\x1bOA\x1b[H\x1b[4~"),
            [
                Key::Char('q'),
                Key::Tab,
                Key::Char('9'),
                Key::Up,
                Key::Down,
                Key::PageUp,
                Key::PageDown,
                Key::Up,
                Key::Home,
                Key::End
            ]
        );
        // Unknown sequences (F1, a mouse report) and control bytes are skipped, not typed.
        assert_eq!(parse_keys(b"\x1b[11~\x03\x1b[<0;1;2Mm"), [Key::Char('m')]);
        // A truncated sequence at the end of a read does not panic.
        assert_eq!(parse_keys(b"\x1b["), []);
    }
}
