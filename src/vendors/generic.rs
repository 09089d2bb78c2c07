//! A vendor defined in configuration: `vendor = "generic"` with a
//! `[source.map]` table saying where each canonical field comes from.
//!
//! Each field is an RFC 6901 JSON pointer into the body (`"/data/id"`) or
//! `"header:NAME"` for a request header (`"header:webhook-id"`; a
//! `webhook-` header falls back to its `svix-` name, as the Standard
//! Webhooks check does). `id` (the
//! vendor's event id) and `type` (its event type) are required: a body that
//! is not JSON, or lacks either, is published `unmapped` with the reason.
//! `[source.map.types]` maps vendor types to canonical ones; a type not
//! listed is `unknown`, its vendor type kept, as for the built-in vendors.
//! Amounts come from `amount_minor` (an integer of minor units) or
//! `amount_value` (a decimal string or number, read from its literal text,
//! never through floating point), in `currency` (else the source's
//! `currency`). An optional field that is absent or unreadable is left out;
//! an unreadable one is named in `data.skipped`. `redact` lists pointers
//! removed from `vendor_data` before publishing (the card-number guard runs
//! on what is left, as for every event). The event id is derived from the
//! source and the vendor event id, so a sender's retry dedups.

use std::collections::BTreeMap;

use hyper::header::HeaderName;
use serde_json::Value;

use super::{optional, parse_json, parse_rfc3339, MapOptions, Mapped, MappingError, Vendor};
use crate::auth::Verified;
use crate::canonical::{Amount, Facts, Merchant, ObjectRef, UNKNOWN};

/// The generic vendor module; everything it knows is in the source's map.
pub struct Generic;

/// Where one canonical field is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// An RFC 6901 pointer into the body.
    Pointer(String),
    /// A request header.
    Header(HeaderName),
}

/// How an amount is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountField {
    /// An integer of minor units.
    Minor(Field),
    /// A decimal in major units, as a string or a number.
    Value(Field),
}

/// A source's `[source.map]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericMap {
    /// The vendor's event id.
    pub id: Field,
    /// The vendor's event type.
    pub event_type: Field,
    /// When it happened (RFC 3339, or unix seconds).
    pub time: Option<Field>,
    /// Our noun for the object (`charge`, `payout`).
    pub object_type: Option<Field>,
    /// The vendor's id of the object.
    pub object_id: Option<Field>,
    /// The amount.
    pub amount: Option<AmountField>,
    /// The amount's ISO 4217 currency.
    pub currency: Option<Field>,
    /// The merchant account.
    pub merchant_id: Option<Field>,
    /// Vendor type → canonical type.
    pub types: BTreeMap<String, String>,
    /// Pointers removed from `vendor_data`.
    pub redact: Vec<String>,
}

/// One problem in a `[source.map]`, with the key under it (`types."a.b"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapProblem {
    /// The key under `source.map`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A `[source.map]` as written.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct RawMap {
    /// Where the vendor's event id is.
    pub id: Option<String>,
    /// Where the vendor's event type is.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Where the event's time is.
    pub time: Option<String>,
    /// Where the object's type is.
    pub object_type: Option<String>,
    /// Where the object's id is.
    pub object_id: Option<String>,
    /// Where an integer amount in minor units is.
    pub amount_minor: Option<String>,
    /// Where a decimal amount in major units is.
    pub amount_value: Option<String>,
    /// Where the currency is.
    pub currency: Option<String>,
    /// Where the merchant id is.
    pub merchant_id: Option<String>,
    /// Vendor type → canonical type.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// Pointers removed before publishing.
    #[serde(default)]
    pub redact: Vec<String>,
}

impl GenericMap {
    /// Checks a raw map: pointer syntax, header names, canonical types,
    /// one amount form. Every problem is returned, each with its key.
    pub fn build(raw: &RawMap) -> Result<Self, Vec<MapProblem>> {
        let mut problems = Vec::new();
        let mut field = |key: &str, value: &Option<String>, required: bool| -> Option<Field> {
            match value {
                None if required => {
                    problems.push(MapProblem {
                        key: key.to_owned(),
                        message: "missing: a JSON pointer (\"/data/id\") or \"header:NAME\"".into(),
                    });
                    None
                }
                None => None,
                Some(text) => match parse_field(text) {
                    Ok(field) => Some(field),
                    Err(message) => {
                        problems.push(MapProblem {
                            key: key.to_owned(),
                            message,
                        });
                        None
                    }
                },
            }
        };
        let id = field("id", &raw.id, true);
        let event_type = field("type", &raw.event_type, true);
        let time = field("time", &raw.time, false);
        let object_type = field("object_type", &raw.object_type, false);
        let object_id = field("object_id", &raw.object_id, false);
        let minor = field("amount_minor", &raw.amount_minor, false);
        let value = field("amount_value", &raw.amount_value, false);
        let currency = field("currency", &raw.currency, false);
        let merchant_id = field("merchant_id", &raw.merchant_id, false);
        let amount = match (minor, value) {
            (Some(_), Some(_)) => {
                problems.push(MapProblem {
                    key: "amount_value".into(),
                    message: "set amount_minor or amount_value, not both".into(),
                });
                None
            }
            (Some(m), None) => Some(AmountField::Minor(m)),
            (None, Some(v)) => Some(AmountField::Value(v)),
            (None, None) => None,
        };
        for (vendor_type, canonical) in &raw.types {
            if !is_canonical_type(canonical) {
                problems.push(MapProblem {
                    key: format!("types.\"{vendor_type}\""),
                    message: format!(
                        "`{canonical}` is not a canonical type: `<noun>.<verb>` in lowercase (payment.succeeded), or unknown"
                    ),
                });
            }
        }
        for (i, pointer) in raw.redact.iter().enumerate() {
            if let Err(message) = check_pointer(pointer).and_then(|()| {
                if pointer.is_empty() {
                    Err("would remove the whole body".to_owned())
                } else {
                    Ok(())
                }
            }) {
                problems.push(MapProblem {
                    key: format!("redact[{i}]"),
                    message,
                });
            }
        }
        match (id, event_type) {
            (Some(id), Some(event_type)) if problems.is_empty() => Ok(Self {
                id,
                event_type,
                time,
                object_type,
                object_id,
                amount,
                currency,
                merchant_id,
                types: raw.types.clone(),
                redact: raw.redact.clone(),
            }),
            _ => Err(problems),
        }
    }
}

/// `"header:NAME"` or a JSON pointer.
fn parse_field(text: &str) -> Result<Field, String> {
    if let Some(name) = text.strip_prefix("header:") {
        return HeaderName::from_bytes(name.trim().as_bytes())
            .map(Field::Header)
            .map_err(|_| format!("`{name}` is not a header name"));
    }
    check_pointer(text)?;
    Ok(Field::Pointer(text.to_owned()))
}

/// RFC 6901: empty, or `/`-separated tokens where `~` is only `~0` or `~1`.
fn check_pointer(text: &str) -> Result<(), String> {
    if !text.is_empty() && !text.starts_with('/') {
        return Err(format!(
            "`{text}` is not a JSON pointer: it must start with `/` (RFC 6901), or be \"header:NAME\""
        ));
    }
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{text}` is not a JSON pointer: `~` must be followed by 0 or 1 (RFC 6901)"
            ));
        }
    }
    Ok(())
}

/// Our vocabulary's shape, as the schema's `type` pattern has it.
fn is_canonical_type(text: &str) -> bool {
    if text == UNKNOWN {
        return true;
    }
    let Some((noun, verb)) = text.split_once('.') else {
        return false;
    };
    let mut noun_chars = noun.chars();
    noun_chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && noun_chars.all(|c| c.is_ascii_lowercase() || c == '_')
        && !verb.is_empty()
        && verb
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Vendor for Generic {
    /// An `unmapped` body that is JSON loses what `redact` names too; one
    /// that is not JSON has nothing a pointer can name and is kept.
    fn raw_body_for_unmapped<'a>(
        &self,
        body: &'a [u8],
        options: &MapOptions,
    ) -> Option<std::borrow::Cow<'a, [u8]>> {
        let redact = options.generic().map(|m| m.redact.as_slice());
        let Some(pointers) = redact.filter(|r| !r.is_empty()) else {
            return Some(std::borrow::Cow::Borrowed(body));
        };
        match parse_json::<Value>(body) {
            Ok(mut value) => {
                for pointer in pointers {
                    remove_at(&mut value, pointer);
                }
                serde_json::to_vec(&value).ok().map(std::borrow::Cow::Owned)
            }
            Err(_) => Some(std::borrow::Cow::Borrowed(body)),
        }
    }

    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError> {
        let map = options
            .generic()
            .ok_or_else(|| MappingError::new("the source has no [source.map]"))?;
        let mut root: Value = parse_json(body.body())?;
        let read = |field: &Field| -> Option<Value> {
            match field {
                Field::Pointer(p) => root.pointer(p).filter(|v| !v.is_null()).cloned(),
                Field::Header(name) => header(body, name).map(|v| Value::String(v.to_owned())),
            }
        };
        let text = |field: &Field| read(field).and_then(|v| text_of(&v));
        let vendor_event_id = text(&map.id).ok_or_else(|| {
            MappingError::new(format!(
                "map.id ({}) is missing or empty",
                describe(&map.id)
            ))
        })?;
        let vendor_event_type = text(&map.event_type).ok_or_else(|| {
            MappingError::new(format!(
                "map.type ({}) is missing or empty",
                describe(&map.event_type)
            ))
        })?;
        let mut facts = Facts::default();
        let occurred_at = map.time.as_ref().and_then(&read).and_then(|v| match v {
            Value::String(s) => {
                parse_rfc3339(&s).or_else(|| s.parse().ok().and_then(super::from_unix_seconds))
            }
            Value::Number(n) => n.as_i64().and_then(super::from_unix_seconds),
            _ => None,
        });
        facts.object = match (
            map.object_type.as_ref().and_then(&text),
            map.object_id.as_ref().and_then(&text),
        ) {
            (kind, Some(id)) => Some(ObjectRef {
                kind: kind
                    .map(|k| noun_of(&k))
                    .unwrap_or_else(|| "object".to_owned()),
                id,
            }),
            _ => None,
        };
        facts.merchant = map
            .merchant_id
            .as_ref()
            .and_then(&text)
            .map(|id| Merchant { id });
        if let Some(amount) = &map.amount {
            let currency = match map.currency.as_ref().and_then(&text) {
                None => Some(options.currency.clone()),
                Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    Some(c.to_ascii_uppercase())
                }
                Some(_) => {
                    facts.skip(
                        "map.currency",
                        "not an ISO 4217 code, so no amount is given",
                    );
                    None
                }
            };
            if let Some(currency) = currency {
                let (name, field) = match amount {
                    AmountField::Minor(f) => ("map.amount_minor", f),
                    AmountField::Value(f) => ("map.amount_value", f),
                };
                let read_amount = match (amount, read(field)) {
                    (_, None) => Ok(None),
                    (AmountField::Minor(_), Some(v)) => v
                        .as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                        .map(|m| Some(Amount::from_minor(m, &currency)))
                        .ok_or_else(|| MappingError::new("not an integer of minor units")),
                    // A number's literal text, not the float it parsed to.
                    (AmountField::Value(f), Some(v)) => literal(body.body(), f)
                        .filter(|_| v.is_number())
                        .or_else(|| text_of(&v).filter(|_| v.is_string()))
                        .ok_or_else(|| MappingError::new("not a number or a decimal string"))
                        .and_then(|t| {
                            Amount::from_decimal(&t, &currency)
                                .map(Some)
                                .map_err(|e| MappingError::new(e.to_string()))
                        }),
                };
                facts.amount = optional(&mut facts, name, read_amount);
            }
        }
        for pointer in &map.redact {
            remove_at(&mut root, pointer);
        }
        facts.vendor_data = root;
        let event_type = map
            .types
            .get(&vendor_event_type)
            .cloned()
            .unwrap_or_else(|| UNKNOWN.to_owned());
        Ok(Mapped {
            event_type,
            vendor_event_type,
            vendor_event_id,
            occurred_at,
            facts,
        })
    }
}

/// The literal text of the JSON value a pointer field names, read from the
/// raw body, so a decimal such as `12.10` is never a float on the way.
fn literal(body: &[u8], field: &Field) -> Option<String> {
    use serde_json::value::RawValue;
    let Field::Pointer(pointer) = field else {
        return None;
    };
    let text = std::str::from_utf8(body).ok()?;
    let mut current: &RawValue = serde_json::from_str(text).ok()?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let raw = current.get();
        current = if raw.trim_start().starts_with('{') {
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(raw).ok()?;
            map.get(&token).copied()?
        } else {
            let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
            items.get(token.parse::<usize>().ok()?).copied()?
        };
    }
    Some(current.get().trim().to_owned())
}

/// A request header; a Standard Webhooks header falls back to its older
/// `svix-` name, as the signature check reads it.
fn header<'a>(body: &'a Verified, name: &HeaderName) -> Option<&'a str> {
    body.header(name)
        .or_else(|| body.header(&crate::auth::svix_name(name.as_str())?))
}

/// How a field is read, for a reason text.
fn describe(field: &Field) -> String {
    match field {
        Field::Pointer(p) => format!("pointer {p}"),
        Field::Header(h) => format!("header {h}"),
    }
}

/// Strings trimmed, numbers as their literal; nothing else is text.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A vendor's object type as one of our nouns, as the schema has them:
/// lowercase letters, `_` for anything else (`Card Authorization` →
/// `card_authorization`).
fn noun_of(text: &str) -> String {
    let noun: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let noun = noun.trim_start_matches(|c: char| !c.is_ascii_lowercase());
    if noun.is_empty() {
        "object".to_owned()
    } else {
        noun.to_owned()
    }
}

/// Removes the value a pointer names, if there is one.
fn remove_at(root: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < items.len() {
                    items.remove(i);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
