//! Text that came from input, made safe to publish and log.
//!
//! Error messages from parsers (serde, toml, the mappers' own) quote the
//! value they choke on. Such a message is about to become an `unmapped`
//! reason in a published event, a log field, or a reload's 422 body, so the
//! quoted values go: the message keeps the field and the shape it expected,
//! never the data (a secret, a name, a card number).

/// `text` with every quoted segment (`"…"`, as serde quotes a value, and
/// `` `…` ``, as serde quotes a variant and parsers a value) replaced by
/// `…`, except the names serde quotes after `field ` (a key of the body's
/// shape, which a reason must name), cut at `max_chars` characters (an
/// ellipsis marks the cut) and stripped of control characters, so it stays
/// one line of a log.
pub fn without_quoted_values(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 8));
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' && c != '`' {
            out.push(c);
            continue;
        }
        let mut quoted = String::new();
        let mut escaped = false;
        for d in chars.by_ref() {
            match (escaped, d) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, d) if d == c => break,
                _ => {}
            }
            quoted.push(d);
        }
        let a_field_name = c == '`'
            && out.ends_with("field ")
            && quoted.len() <= 64
            && quoted
                .chars()
                .all(|k| k.is_ascii_alphanumeric() || matches!(k, '_' | '-' | '.'));
        out.push(c);
        out.push_str(if a_field_name { &quoted } else { "…" });
        out.push(c);
    }
    let mut cut = out.chars();
    if cut.by_ref().take(max_chars).count() == max_chars && cut.next().is_some() {
        let end = out
            .char_indices()
            .nth(max_chars)
            .map_or(out.len(), |(i, _)| i);
        out.truncate(end);
        out.push('…');
    }
    out.retain(|c| !c.is_control());
    out
}

/// `text` as one bounded log field: control characters (CR, LF, escapes)
/// removed, cut at `max_chars` characters. For values from input that are
/// not error messages (an id read from a body).
pub fn one_line(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}
