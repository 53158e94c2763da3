//! Word wrapping by display width, never inside a word: an operator copies an error's URL or errno out of the
//! terminal, and `Connec`/`tion` on two lines helps nobody.

use unicode_width::UnicodeWidthStr;

/// Columns a string takes in a terminal (`µ` one, a CJK character two), which is what a width limit is about.
pub(super) fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// Greedy wrap of `text` into lines of at most `max` columns, words (split at whitespace) kept whole; the first
/// line starts with `first`, the others with `rest` (a hanging indent). A word wider than a line can hold gets a
/// line of its own and overflows: breaking it is the one thing this must not do. Always at least one line.
pub(super) fn wrap(text: &str, max: usize, first: &str, rest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut used = width(first);
    let mut has_word = false;
    for word in text.split_whitespace() {
        let w = width(word);
        if has_word && used + 1 + w > max {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            used = width(rest);
            has_word = false;
        }
        if has_word {
            line.push(' ');
            used += 1;
        }
        line.push_str(word);
        used += w;
        has_word = true;
    }
    lines.push(line.trim_end().to_string());
    lines
}

/// The text with every control character (an escape sequence, a bell, a carriage return) shown as its escape,
/// `\u{1b}`, instead of acting on the terminal.
pub(super) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The widest word of a text: the narrowest column it can be wrapped into without overflowing.
pub(super) fn longest_word(text: &str) -> usize {
    text.split_whitespace().map(width).max().unwrap_or(0)
}

/// The text on one line, its whitespace (newlines included) as single spaces.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("evil\u{1b}[31mRED"), "evil\\u{1b}[31mRED");
        assert_eq!(printable("plain"), "plain");
    }

    #[test]
    fn wraps_between_words_with_a_hanging_indent() {
        let lines = wrap(
            "cannot connect: transport error: tcp connect error: Connection refused",
            30,
            "  ",
            "    ",
        );
        assert_eq!(
            lines,
            [
                "  cannot connect: transport",
                "    error: tcp connect error:",
                "    Connection refused",
            ]
        );
    }

    #[test]
    fn a_word_wider_than_the_line_overflows_alone_and_whole() {
        let url = "http://etcd-0.a-very-long-internal-domain.example:2379/metrics";
        let lines = wrap(&format!("GET {url}: timed out"), 20, "", "  ");
        assert_eq!(lines, ["GET", &format!("  {url}:"), "  timed out"]);
    }

    #[test]
    fn widths_are_terminal_columns_not_bytes() {
        assert_eq!(width("250µs"), 5);
        // Five columns of "12.5µs" plus "over" fit in 11, counting µ as one column though it is two bytes.
        assert_eq!(wrap("12.5µs over", 11, "", ""), ["12.5µs over"]);
    }

    #[test]
    fn empty_text_is_one_line_of_indent_without_trailing_space() {
        assert_eq!(wrap("", 10, "  ", "  "), [""]);
        assert_eq!(wrap("a\n  b", 10, "", ""), ["a b"]);
    }
}
