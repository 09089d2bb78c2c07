//! A relaxed reader for MongoDB shell notation, the form Strictly's own
//! webhook doc prints its examples in.
//!
//! The shell prints a document as JSON plus constructor calls:
//! `ObjectId("…")`, `ISODate("…")`, `NumberLong(…)`, `NumberInt(…)`,
//! `NumberDecimal("…")`. [`to_json`] rewrites exactly those calls into JSON
//! (ids and dates become strings, numbers become number literals with their
//! digits untouched) and copies everything else byte for byte, so serde_json
//! does the real parsing and reports any other deviation. It is a scanner, not
//! a regex: it tracks whether it is inside a JSON string (escapes included),
//! so a string that merely *mentions* `ObjectId("x")` is left alone.

/// What a shell constructor becomes in JSON.
#[derive(Clone, Copy)]
enum Becomes {
    /// `ObjectId("…")`, `ISODate("…")`: the argument as a JSON string.
    String,
    /// `NumberLong(…)` and friends: the argument as a JSON number literal.
    Number,
}

/// The constructors we understand; anything else is left for serde_json to refuse.
fn constructor(name: &str) -> Option<Becomes> {
    match name {
        "ObjectId" | "ISODate" => Some(Becomes::String),
        "NumberLong" | "NumberInt" | "NumberDecimal" => Some(Becomes::Number),
        _ => None,
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index just past the string literal opening at `i` (quote `b[i]`), honouring
/// backslash escapes.
fn string_end(b: &[u8], i: usize) -> Result<usize, String> {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            q if q == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string starting at byte {i}"))
}

/// Rewrites the shell constructor calls of `text` into JSON; the result still
/// has to go through serde_json.
pub(super) fn to_json(text: &str) -> Result<String, String> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            i = string_end(b, i)?;
            continue;
        }
        let starts_ident =
            is_ident_start(b[i]) && (i == 0 || !is_ident_char(b[i - 1]) && b[i - 1] != b'.');
        if !starts_ident {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && is_ident_char(b[end]) {
            end += 1;
        }
        let name = &text[i..end];
        let open = skip_ws(b, end);
        let Some(becomes) = constructor(name).filter(|_| b.get(open) == Some(&b'(')) else {
            i = end;
            continue;
        };
        let (replacement, close) = call(text, name, becomes, open)?;
        out.push_str(&text[copied..i]);
        out.push_str(&replacement);
        copied = close + 1;
        i = close + 1;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// Reads the argument of the call whose `(` is at `open`; returns its JSON and
/// the index of the closing `)`.
fn call(text: &str, name: &str, becomes: Becomes, open: usize) -> Result<(String, usize), String> {
    let b = text.as_bytes();
    let start = skip_ws(b, open + 1);
    let bad = |what: &str| format!("{name}(…) at byte {open}: {what}");
    let (arg, after) = match b.get(start) {
        Some(b'"') => {
            let end = string_end(b, start)?;
            let arg: String =
                serde_json::from_str(&text[start..end]).map_err(|e| bad(&e.to_string()))?;
            (arg, end)
        }
        Some(b'\'') => {
            let end = string_end(b, start)?;
            let arg = &text[start + 1..end - 1];
            if arg.contains(['\\', '"']) {
                return Err(bad("escapes in a single-quoted argument"));
            }
            (arg.to_owned(), end)
        }
        _ => {
            let mut end = start;
            while end < b.len() && matches!(b[end], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                end += 1;
            }
            (text[start..end].to_owned(), end)
        }
    };
    let close = skip_ws(b, after);
    if b.get(close) != Some(&b')') {
        return Err(bad("expected one argument and `)`"));
    }
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(bad("no argument"));
    }
    let json = match becomes {
        Becomes::String => serde_json::to_string(arg).map_err(|e| bad(&e.to_string()))?,
        Becomes::Number => {
            serde_json::from_str::<serde_json::Number>(arg)
                .map_err(|_| bad(&format!("`{arg}` is not a number")))?;
            arg.to_owned()
        }
    };
    Ok((json, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_become_json_outside_strings_only() {
        let shell = r#"{ "_id" : ObjectId("6679c388e32ac6f528894a8f"), "at" : ISODate('2024-06-24T16:20:02.393-04:00'),
            "n" : NumberLong(600), "m" : NumberLong("601"), "i" : NumberInt( 7 ), "d" : NumberDecimal("12.50"),
            "note" : "said \"ObjectId(\\\"x\\\")\" twice ObjectId(\"y\")", "e" : 1e5, "MyObjectId" : true }"#;
        let json = to_json(shell).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["_id"], "6679c388e32ac6f528894a8f");
        assert_eq!(v["at"], "2024-06-24T16:20:02.393-04:00");
        assert_eq!(v["n"], 600);
        assert_eq!(v["m"], 601);
        assert_eq!(v["i"], 7);
        assert!(json.contains(r#""d" : 12.50"#), "{json}");
        assert_eq!(v["note"], r#"said "ObjectId(\"x\")" twice ObjectId("y")"#);
        assert_eq!(v["e"], 100000.0);
    }

    #[test]
    fn malformed_calls_are_refused() {
        assert!(to_json(r#"{"a": ISODate()}"#).is_err());
        assert!(to_json(r#"{"a": NumberLong("ten")}"#).is_err());
        assert!(to_json(r#"{"a": ObjectId("x", "y")}"#).is_err());
        assert!(to_json(r#"{"a": "unterminated}"#).is_err());
        // Unknown calls are left as they are, for serde_json to refuse.
        assert_eq!(
            to_json("{\"a\": Timestamp(1, 2)}").unwrap(),
            "{\"a\": Timestamp(1, 2)}"
        );
    }
}
