//! The text of analytics exports: CSV cells (RFC 4180, safe to open in a spreadsheet) and
//! file names. The server streams rows through these a page at a time.

/// A CSV cell: quoted when it holds a comma, a quote or a line break (RFC 4180 §2.6, quotes
/// doubled as §2.7 says), and defused when a spreadsheet would read it as a formula.
///
/// CSV injection (OWASP): a cell starting with `=`, `+`, `-` or `@` (or a tab or carriage
/// return, which some spreadsheets skip before looking) is run as a formula by Excel,
/// LibreOffice and Google Sheets; user agents, client and tool names are chosen by clients,
/// so such a cell gets a leading `'`, which spreadsheets show as text. A plain number such as
/// a JSON-RPC error code (`-32602`) is not a formula and is kept as it is.
pub fn csv_cell(value: &str) -> String {
    let defused = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if !is_plain_number(value) => {
            format!("'{value}")
        }
        _ => value.to_owned(),
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

/// `-12`, `+3`, `-0.5`: a number a spreadsheet reads as a number, never as a formula.
fn is_plain_number(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// One CSV record of `cells`, each passed through [`csv_cell`], ended by CRLF (RFC 4180 §2.1).
pub fn csv_record<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_cell(cell));
    }
    line.push_str("\r\n");
    line
}

/// An RFC 3339 time as it can appear in a file name: `2026-01-02T03:04:05.000Z` becomes
/// `20260102T030405Z`.
pub fn file_stamp(rfc3339: &str) -> String {
    let whole_seconds = rfc3339.split('.').next().unwrap_or(rfc3339);
    let mut out: String = whole_seconds
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if !out.ends_with('Z') {
        out.push('Z');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_only_when_rfc_4180_needs_it() {
        for (value, cell, why) in [
            ("plain", "plain", "nothing to quote"),
            ("", "", "empty stays empty"),
            ("a,b", "\"a,b\"", "a comma"),
            ("say \"hi\"", "\"say \"\"hi\"\"\"", "quotes are doubled"),
            ("two\nlines", "\"two\nlines\"", "a line break"),
            (
                "Mozilla/5.0 (X11; Linux)",
                "Mozilla/5.0 (X11; Linux)",
                "no comma",
            ),
        ] {
            assert_eq!(csv_cell(value), cell, "{why}");
        }
    }

    #[test]
    fn formula_cells_are_defused_and_numbers_are_not() {
        for (value, cell, why) in [
            ("=1+1", "'=1+1", "an equals sign"),
            ("+1+1", "'+1+1", "a plus sign that is not a number"),
            ("-1+1", "'-1+1", "a minus sign that is not a number"),
            ("@SUM(A1)", "'@SUM(A1)", "an at sign"),
            ("\t=1", "'\t=1", "a leading tab"),
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
                "defused, then quoted",
            ),
            ("-32602", "-32602", "a JSON-RPC error code is a number"),
            ("+3", "+3", "a signed number"),
            ("-0.5", "-0.5", "a decimal"),
            ("-", "'-", "a lone minus is not a number"),
            ("-.5", "'-.5", "not a plain number"),
            ("a=b", "a=b", "only the first character matters"),
        ] {
            assert_eq!(csv_cell(value), cell, "{why}");
        }
    }

    #[test]
    fn a_record_ends_with_crlf() {
        assert_eq!(csv_record(["a", "b,c", "=x"]), "a,\"b,c\",'=x\r\n");
    }

    #[test]
    fn file_stamps_have_no_separators() {
        assert_eq!(file_stamp("2026-01-02T03:04:05.000Z"), "20260102T030405Z");
        assert_eq!(file_stamp("2026-01-02T03:04:05Z"), "20260102T030405Z");
    }
}
