//! One module per vendor, behind one small trait.
//!
//! A vendor module knows one payload dialect: it parses the verified body once
//! into its own wire structs and maps them once into [`Mapped`]. It does not
//! authenticate (that is per-source config in [`crate::auth`]); it only tells
//! which [`SignatureScheme`] its signatures follow, if it signs at all.
//!
//! The list of vendors is closed and lives in [`VendorKind`]: adding a vendor
//! means adding a variant, and the compiler then points at every `match` that
//! must learn about it. A runtime registry would buy nothing for four vendors
//! known at compile time. The enum itself is defined in [`crate::canonical`],
//! because a canonical event names its vendor; which module implements each
//! vendor ([`VendorKind::vendor`]) is decided here, so the canonical types
//! never depend on the vendor modules that produce them.

pub mod generic;
pub(crate) mod nexio;
mod stickypay;
mod strictly;
mod usaepay;

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::{SignatureScheme, Verified};
use crate::canonical::Facts;
pub use crate::canonical::{Mapped, VendorKind};

/// The mapping contract every vendor module fulfils.
pub trait Vendor: Send + Sync + 'static {
    /// Where this vendor's HMAC signature lives, or `None` if it cannot sign
    /// (the config refuses `hmac` for such a vendor instead of ignoring it).
    fn signature_scheme(&self) -> Option<SignatureScheme> {
        None
    }

    /// Reads an authenticated body into a canonical event. An error means the
    /// body is published as `unmapped` with the error as the reason, never dropped.
    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError>;

    /// The raw body to carry in an `unmapped` event. Vendors whose bodies may
    /// hold secrets or personal data return a redacted copy, or `None` to
    /// withhold it when it cannot be redacted (not parseable).
    fn raw_body_for_unmapped<'a>(
        &self,
        body: &'a [u8],
        _options: &MapOptions,
    ) -> Option<Cow<'a, [u8]>> {
        Some(Cow::Borrowed(body))
    }

    /// The kinds of object this vendor's API is asked for, each with its
    /// default path; empty for vendors whose webhooks carry the whole record
    /// (the config then refuses `[source.enrich]` for them).
    fn lookup_paths(&self) -> &'static [LookupPath] {
        &[]
    }

    /// The look-up a mapped event still needs (a thin ping's object), or
    /// `None` when the body said everything.
    fn lookup(&self, _mapped: &Mapped) -> Option<Lookup> {
        None
    }

    /// Merges the record the vendor's API answered for `lookup` into the
    /// event. On `Err` (the record cannot be used, and why) the event is left
    /// exactly as it was, so it can still be published with the reason.
    fn apply_lookup(
        &self,
        _mapped: &mut Mapped,
        lookup: &Lookup,
        _found: &Value,
        _options: &MapOptions,
    ) -> Result<(), String> {
        Err(format!("this vendor has no `{}` look-up", lookup.kind))
    }
}

/// One object a thin ping needs fetched from the vendor's API. Serializable,
/// because a look-up that does not settle within the request is kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lookup {
    /// Which kind of object: a [`LookupPath::kind`] of the vendor.
    pub kind: String,
    /// The vendor's object id, as text.
    pub id: String,
}

/// One kind of object a vendor's API is asked for, and where by default; a
/// source may override the path under `[source.enrich.paths]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupPath {
    /// The kind's name: [`Lookup::kind`] and the key under `paths`.
    pub kind: &'static str,
    /// Path template; `{id}` is the object id.
    pub default_path: &'static str,
    /// What it looks up, for the configuration reference.
    pub what: &'static str,
}

impl VendorKind {
    /// The module implementing this vendor.
    pub fn vendor(self) -> &'static dyn Vendor {
        match self {
            Self::Usaepay => &usaepay::Usaepay,
            Self::Strictly => &strictly::Strictly,
            Self::Nexio => &nexio::Nexio,
            Self::Stickypay => &stickypay::Stickypay,
            Self::Generic => &generic::Generic,
        }
    }
}

/// How amounts are expressed when a vendor does not document it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AmountUnit {
    /// Integers are minor units (cents): `600` is 6.00.
    #[default]
    Minor,
    /// Numbers are major units (dollars): `600` is 600.00.
    Major,
}

/// Per-source choices that change how a vendor's body is read: the one
/// every vendor reads, and the ones of a single vendor, typed by vendor so
/// no vendor can be handed another's option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOptions {
    /// Currency assumed when the body names none (USAePay never does).
    pub currency: String,
    /// What only this source's vendor reads.
    pub vendor: VendorOptions,
}

/// The options of one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VendorOptions {
    /// The vendor has none (USAePay, Nexio), or they are all defaults.
    #[default]
    None,
    /// Strictly: the unit of its numeric amounts.
    Strictly {
        /// Cents (`minor`, the default) or dollars (`major`).
        amount_unit: AmountUnit,
    },
    /// Sticky: whether the payer's contact details are published.
    Stickypay {
        /// `data.customer` and the payer's fields in `vendor_data`.
        include_personal_data: bool,
    },
    /// A source defined in config: where each canonical field comes from.
    Generic(std::sync::Arc<generic::GenericMap>),
}

impl Default for MapOptions {
    fn default() -> Self {
        Self {
            currency: "USD".to_owned(),
            vendor: VendorOptions::None,
        }
    }
}

impl MapOptions {
    /// Strictly's amount unit; minor for every other source.
    pub fn amount_unit(&self) -> AmountUnit {
        match &self.vendor {
            VendorOptions::Strictly { amount_unit } => *amount_unit,
            _ => AmountUnit::Minor,
        }
    }

    /// Whether Sticky's payer details are published; never for other sources.
    pub fn include_personal_data(&self) -> bool {
        matches!(
            self.vendor,
            VendorOptions::Stickypay {
                include_personal_data: true
            }
        )
    }

    /// A generic source's map.
    pub fn generic(&self) -> Option<&generic::GenericMap> {
        match &self.vendor {
            VendorOptions::Generic(map) => Some(map),
            _ => None,
        }
    }
}

/// Why a body could not be mapped; the text becomes the `unmapped` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(String);

/// Longest `unmapped` reason, in characters: the reason goes into the
/// published event and a WARN log line, and must stay a line, whatever the
/// body held.
pub const MAX_REASON_CHARS: usize = 300;

impl MappingError {
    /// A reason naming the field and what was wrong with it. Whatever the
    /// caller wrote (a mapper's text, serde's, a parser's), values quoted in
    /// it are replaced by `…` and it is cut at [`MAX_REASON_CHARS`], so a
    /// reason never carries the body's data (a secret, a name, a card number)
    /// into the event or the log: see [`crate::scrub::without_quoted_values`].
    pub fn new(reason: impl Into<String>) -> Self {
        Self(crate::scrub::without_quoted_values(
            &reason.into(),
            MAX_REASON_CHARS,
        ))
    }

    /// The reason text.
    pub fn reason(&self) -> &str {
        &self.0
    }

    /// The reason text, owned.
    pub fn into_reason(self) -> String {
        self.0
    }
}

/// An optional field's value: kept when it reads cleanly, else noted in
/// `facts.skipped` (with the reason) and left out. An optional figure in an
/// unexpected format is never a reason to publish a whole event as
/// `unmapped`; only what identifies the event is required.
pub(crate) fn optional<T>(
    facts: &mut Facts,
    field: &str,
    read: Result<Option<T>, MappingError>,
) -> Option<T> {
    read.unwrap_or_else(|error| {
        facts.skip(field, error.reason());
        None
    })
}

/// Deepest nesting of arrays and objects a mapped body may have. Vendor
/// bodies nest a handful of levels; the published event adds two more around
/// `vendor_data`, and consumers parse with limits like serde_json's 128, so a
/// body deeper than this is published as `unmapped` (its raw text is a string,
/// readable at any depth) instead of as an event no consumer could parse.
pub(crate) const MAX_BODY_DEPTH: usize = 64;

/// Refuses bodies nested deeper than [`MAX_BODY_DEPTH`], by a byte scan that
/// skips string contents (so it costs no allocation and no recursion).
pub(crate) fn check_depth(body: &[u8]) -> Result<(), MappingError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_BODY_DEPTH {
                    return Err(MappingError::new(format!(
                        "body nests deeper than {MAX_BODY_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a body into a vendor's wire struct; the error names the field and position.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, MappingError> {
    check_depth(body)?;
    serde_json::from_slice(body)
        .map_err(|e| MappingError::new(format!("body is not the expected JSON: {e}")))
}

/// Reads `YYYY-MM-DD HH:MM:SS` (no zone) as UTC; see docs/consumers.md on zone-less times.
pub(crate) fn parse_naive_utc(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text.trim(), &format)
        .ok()
        .map(|t| t.assume_utc())
}

/// Reads an RFC 3339 / ISO 8601 timestamp with a zone (`Z` or `±hh:mm`).
pub(crate) fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).ok()
}

/// Reads unix seconds.
pub(crate) fn from_unix_seconds(secs: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_keep_field_names_and_drop_values() {
        let serde = serde_json::from_str::<std::collections::HashMap<String, u64>>(
            r#"{"amount": "4111111111111111 hunter2"}"#,
        )
        .unwrap_err()
        .to_string();
        let reason = MappingError::new(format!("body is not the expected JSON: {serde}"));
        assert!(!reason.reason().contains("4111"), "{}", reason.reason());
        assert!(!reason.reason().contains("hunter2"), "{}", reason.reason());
        assert!(
            reason.reason().contains("line 1 column"),
            "{}",
            reason.reason()
        );
        let missing = MappingError::new("missing field `event_id` at line 1 column 2");
        assert_eq!(
            missing.reason(),
            "missing field `event_id` at line 1 column 2"
        );
        let mapper = MappingError::new("data.amount: `12,34 secret` is not a number");
        assert_eq!(mapper.reason(), "data.amount: `…` is not a number");
        let escaped = MappingError::new(r#"invalid type: string "a \" b", expected u64"#);
        assert_eq!(
            escaped.reason(),
            r#"invalid type: string "…", expected u64"#
        );
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        let long = MappingError::new(format!("data.x: bad\r\nforged line {}", "x".repeat(1000)));
        assert!(long.reason().chars().count() <= MAX_REASON_CHARS + 1);
        assert!(!long.reason().contains('\n') && !long.reason().contains('\r'));
        let unclosed = MappingError::new("value `never closed 4111111111111111");
        assert_eq!(unclosed.reason(), "value `…`");
    }

    use super::*;

    #[test]
    fn depth_is_counted_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_depth(deep.as_bytes()).is_err());
        let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_depth(fine.as_bytes()).is_ok());
        let brackets_in_a_string =
            format!("{{\"a\": \"{}\\\" {}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(check_depth(brackets_in_a_string.as_bytes()).is_ok());
    }

    #[test]
    fn names_round_trip_for_every_vendor() {
        for v in VendorKind::ALL {
            assert_eq!(VendorKind::from_name(v.name()), Some(v));
        }
        assert_eq!(VendorKind::from_name("USAePay"), None);
    }

    #[test]
    fn zone_less_times_are_read_as_utc() {
        let t = parse_naive_utc("2021-04-07 15:14:26").unwrap();
        assert_eq!(crate::canonical::rfc3339(t), "2021-04-07T15:14:26Z");
        assert!(parse_naive_utc("2021-04-07T15:14:26").is_none());
        let t = parse_rfc3339("2024-06-24T16:20:02.393-04:00").unwrap();
        assert_eq!(t.unix_timestamp(), 1_719_260_402);
    }
}
