//! The operator commands of the `sio-relay` binary besides `run`: each module is one subcommand.
//!
//! They share the daemon's configuration (same file, same `SIO_RELAY_*` variables) and its
//! validation and encoding, so what a command writes is exactly what the relay would accept.

pub mod check_config;
pub mod dead;
pub mod entry;
pub mod monitor;
pub mod send;
pub mod status;

use crate::exit::{Failure, EXIT_FAILURE};

/// `stream socket.io`, or the first and last of the servers' `streamCount` streams.
pub fn streams_named(streams: &[String]) -> String {
    match streams {
        [one] => format!("stream {}", printable(one)),
        [first, .., last] => format!(
            "streams {} .. {} ({})",
            printable(first),
            printable(last),
            streams.len()
        ),
        [] => String::new(),
    }
}

/// `text` safe for a terminal and for a page: what would act instead of being seen is shown
/// escaped (`\n`, `\u{1b}`, `\u{202e}`), everything else as it is. For text that came from
/// producers or from Redis. Escaped are [`shown_escaped`]'s characters: control characters (a
/// newline that would forge a line, an ANSI escape sequence), format characters (a right-to-left
/// override that makes `exe.txt` read as `txt.exe`, zero-width characters that hide a difference)
/// and the line and paragraph separators. The console's page applies the same rule
/// (`shown` in `console/assets/console.js`; `tests/it/console.rs` holds the two equal).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(shown_escaped) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if shown_escaped(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Unicode's general categories Cc (control: C0, DEL, C1), Cf (format) and Zl, Zp (line and
/// paragraph separators): characters that are not seen but act on what is (a line break, an escape
/// sequence, the direction of the text around them) or are invisible. Letters, marks (accents,
/// the vowel signs of Indic scripts), spaces and symbols are kept: escaping them would make text in
/// most languages unreadable, and they cannot disguise other text.
pub fn shown_escaped(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || FORMAT.iter().any(|r| r.contains(&c))
}

/// General category Cf (format) as of Unicode 16.0: the soft hyphen, Arabic and Syriac marks, the
/// zero-width space, non-joiner and joiner, the directional marks, embeddings, overrides and
/// isolates, invisible operators, the byte-order mark, interlinear annotations, and the tags. A
/// unit test compares it with regex-syntax's tables, character by character.
const FORMAT: [std::ops::RangeInclusive<char>; 21] = [
    '\u{ad}'..='\u{ad}',
    '\u{600}'..='\u{605}',
    '\u{61c}'..='\u{61c}',
    '\u{6dd}'..='\u{6dd}',
    '\u{70f}'..='\u{70f}',
    '\u{890}'..='\u{891}',
    '\u{8e2}'..='\u{8e2}',
    '\u{180e}'..='\u{180e}',
    '\u{200b}'..='\u{200f}',
    '\u{202a}'..='\u{202e}',
    '\u{2060}'..='\u{2064}',
    '\u{2066}'..='\u{206f}',
    '\u{feff}'..='\u{feff}',
    '\u{fff9}'..='\u{fffb}',
    '\u{110bd}'..='\u{110bd}',
    '\u{110cd}'..='\u{110cd}',
    '\u{13430}'..='\u{1343f}',
    '\u{1bca0}'..='\u{1bca3}',
    '\u{1d173}'..='\u{1d17a}',
    '\u{e0001}'..='\u{e0001}',
    '\u{e0020}'..='\u{e007f}',
];

/// Runs one command's future on a single-threaded runtime.
pub fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: EXIT_FAILURE,
            message: format!("cannot start the async runtime: {e}"),
        })?
        .block_on(work)
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(super::printable("chat ünïcode"), "chat ünïcode");
        assert_eq!(
            super::printable("a\nINFO forged\u{1b}[31m"),
            "a\\nINFO forged\\u{1b}[31m"
        );
    }

    #[test]
    fn bidirectional_and_invisible_characters_are_escaped() {
        assert_eq!(
            super::printable("invoice\u{202e}fdp.exe"),
            "invoice\\u{202e}fdp.exe"
        );
        assert_eq!(
            super::printable("\u{2066}a\u{2069}\u{200b}b\u{feff}\u{85}\u{2028}\u{e0041}"),
            "\\u{2066}a\\u{2069}\\u{200b}b\\u{feff}\\u{85}\\u{2028}\\u{e0041}"
        );
        // Marks, spaces and symbols of real text stay as they are.
        for kept in ["नमस्ते", "e\u{301}", "a\u{a0}b", "\u{3000}", "🙂", "\u{fe0f}"] {
            assert_eq!(super::printable(kept), kept);
        }
    }

    /// The rule is exactly the general categories Cc, Cf, Zl and Zp, for every character.
    #[test]
    fn the_escaped_characters_are_unicodes_control_format_and_separator_categories() {
        let hir = regex_syntax::Parser::new()
            .parse(r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]")
            .unwrap();
        let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) =
            hir.kind()
        else {
            panic!("a Unicode class: {hir:?}");
        };
        let in_class = |c: char| {
            class
                .ranges()
                .iter()
                .any(|r| r.start() <= c && c <= r.end())
        };
        let differ: Vec<char> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|&c| super::shown_escaped(c) != in_class(c))
            .collect();
        assert!(differ.is_empty(), "{differ:?}");
    }
}
