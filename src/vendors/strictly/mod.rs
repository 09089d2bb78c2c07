//! Strictly (PayWithZero) webhooks.
//!
//! Strictly documents no payload, only three examples of its stored
//! webhook-delivery record (a Mongoose document): `_id`, `server{path,
//! username, password}`, `action`, `data` (the payment), `date`, `attempted`,
//! `failed`, `failureMessage`, `sendAt`, `createdAt`, `updatedAt`, `__v`.
//! What goes over the wire is not documented, so this module reads that record
//! in every form it can plausibly take, and also the bare `{action, data}` a
//! third-party integration assumes.
//!
//! Choices, each because the vendor is silent:
//! - **Notation.** Ids and dates are accepted as plain strings (Mongoose
//!   `toJSON`), as MongoDB Extended JSON (`{"$oid"}`, `{"$date": "…"}`,
//!   `{"$date": {"$numberLong": "…"}}`, numbers as `{"$numberLong"}`…), and as
//!   the shell notation the doc prints (`ObjectId("…")`, `ISODate("…")`,
//!   `NumberLong(…)`, `NumberInt(…)`, `NumberDecimal("…")`). The body is parsed
//!   as strict JSON first; only when that fails does the relaxed reader in
//!   [`shell`] rewrite the constructor calls. Anything else is `unmapped`.
//!   `vendor_data` carries the normalized body: ids as hex strings, dates as
//!   the ISO string given (`$date` millis become UTC `…Z`), `$numberLong`/
//!   `$numberInt` as integers, `$numberDecimal` as its exact decimal string.
//! - **The `server` block is dropped** from `vendor_data`, whole: it holds the
//!   delivery target URL and the Basic-auth `username`/`password` Strictly
//!   uses to call us. A body that carries our own credentials must never be
//!   republished to every consumer on the bus.
//! - **`attempted`/`failed`/`failureMessage` are about delivery**, not the
//!   payment: the doc's "Fail Refund" example is a refund whose webhook
//!   delivery failed, and maps to `refund.succeeded`. They stay in `vendor_data`.
//! - **Event type** from `action`, compared case-insensitively: `sale` →
//!   `payment.succeeded` (`payment.failed` when `data.error` is true), `auth` →
//!   `payment.authorized` (also `payment.failed` on `data.error`: a declined
//!   authorization is no authorization), `capture` → `payment.captured`,
//!   `void` → `payment.voided`, `refund` → `refund.succeeded`. The dashboard
//!   also offers Invoice Paid, Payment Link Paid and Subscription Paid, whose
//!   wire strings are unknown; accepted spellings are `invoice`,
//!   `invoicePaid`, `invoice_paid`, `invoice.paid` → `invoice.paid`;
//!   `paymentLink` (what a third-party integration receives), `paymentLinkPaid`,
//!   `payment_link`, `payment_link_paid`, `payment_link.paid` →
//!   `payment_link.paid`; `subscription`, `subscriptionPaid`,
//!   `subscription_paid`, `subscription.paid` → `subscription.paid`.
//!   Strictly's developer portal also lists dotted names (docs/vendors.md
//!   §7.4), and nothing shows they never reach the wire, so they are read
//!   too: `payment.approved` → `payment.succeeded`, `payment.declined` →
//!   `payment.failed`, `payment.refunded` → `refund.succeeded`,
//!   `payment.voided` → `payment.voided`, `subscription.created|renewed|
//!   failed` → the same, `subscription.cancelled` → `subscription.canceled`
//!   (our vocabulary spells it as Nexio's payouts do), `invoice.created|
//!   overdue` and `customer.created` → the same. Any other action is a valid
//!   record of an `unknown` event, not an error.
//! - **Amount unit** is undocumented: the source's `amount_unit` decides
//!   (default `minor`, `600` = 6.00, matching the third-party integration that
//!   creates links in cents, and Strictly's own sample integration, which
//!   sends `amount × 100`, §7.4; `major`, `600` = 600.00). Numbers are read
//!   from their literal text, never through floating point; under `minor` a
//!   fractional amount is left out (named in `data.skipped`) rather than
//!   rounded, and the event keeps its type. The amount is
//!   `data.amount`, except for refunds: `data.amountToRefund`, else
//!   `data.amountRefunded`, else `data.amount`. Currency is `data.currency`,
//!   else the source's `currency`.
//! - **Identity** is the top-level `_id` (the delivery record, the same on
//!   every retry of it); without one, `action:paymentLinkId|paymentId:
//!   transactionId`; without those, the hash of the body.
//! - **`occurred_at` is `createdAt`**, when the record (so the payment event)
//!   was created; `date` is a delivery schedule (in the examples the last
//!   attempt plus 30 minutes) and is only the fallback. Offsets are kept as sent.
//! - **Payment method** is under `data.paymentMethod` or `data.card`: type
//!   lowercased (`cash`, `card`, `credit`), brand from a non-empty `cardType`
//!   (published as sent: the refund example puts `credit` there), `last4` only
//!   when it is exactly four digits.
//!
//! No signature: Strictly authenticates with HTTP Basic only, which is source
//! configuration, not vendor code.

mod shell;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use time::OffsetDateTime;

use super::{optional, parse_rfc3339, AmountUnit, MapOptions, Mapped, MappingError, Vendor};
use crate::auth::Verified;
use crate::canonical::{body_identity, Amount, Facts, Merchant, ObjectRef, PaymentMethod, UNKNOWN};

/// The Strictly vendor module. It has no signature scheme because Strictly
/// signs nothing; sources authenticate it with HTTP Basic.
pub struct Strictly;

/// The delivery record, as far as the mapping reads it; the rest stays in `vendor_data`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(rename = "_id")]
    id: Option<Value>,
    action: String,
    data: Option<Data>,
    date: Option<Value>,
    created_at: Option<Value>,
}

/// The payment inside the record. Ids are `Value`s because they come as
/// strings, `{"$oid"}` or numbers; amounts are raw JSON text, read exactly.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Data {
    payment_id: Option<Value>,
    payment_link_id: Option<Value>,
    invoice_id: Option<Value>,
    subscription_id: Option<Value>,
    transaction_id: Option<Value>,
    client_id: Option<Value>,
    currency: Option<Value>,
    error: Option<Value>,
    amount: Option<Box<RawValue>>,
    amount_to_refund: Option<Box<RawValue>>,
    amount_refunded: Option<Box<RawValue>>,
    payment_type: Option<Value>,
    payment_method: Option<Method>,
    card: Option<Method>,
}

/// `data.paymentMethod` or `data.card`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Method {
    #[serde(rename = "type")]
    kind: Option<Value>,
    card_type: Option<Value>,
    last4: Option<Value>,
}

/// What an `action` means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Sale,
    Auth,
    Capture,
    Void,
    Refund,
    /// The portal's `payment.declined`: failed whatever `data.error` says.
    Declined,
    InvoicePaid,
    /// The portal's other invoice, subscription and customer events.
    Invoice(&'static str),
    PaymentLinkPaid,
    SubscriptionPaid,
    Subscription(&'static str),
    CustomerCreated,
    Other,
}

impl Action {
    fn of(action: &str) -> Self {
        match action.trim().to_ascii_lowercase().as_str() {
            "sale" | "payment.approved" => Self::Sale,
            "auth" => Self::Auth,
            "capture" => Self::Capture,
            "void" | "payment.voided" => Self::Void,
            "refund" | "payment.refunded" => Self::Refund,
            "payment.declined" => Self::Declined,
            "invoice.created" => Self::Invoice("invoice.created"),
            "invoice.overdue" => Self::Invoice("invoice.overdue"),
            "subscription.created" => Self::Subscription("subscription.created"),
            "subscription.renewed" => Self::Subscription("subscription.renewed"),
            "subscription.cancelled" | "subscription.canceled" => {
                Self::Subscription("subscription.canceled")
            }
            "subscription.failed" => Self::Subscription("subscription.failed"),
            "customer.created" => Self::CustomerCreated,
            "invoice" | "invoicepaid" | "invoice_paid" | "invoice.paid" => Self::InvoicePaid,
            "paymentlink" | "paymentlinkpaid" | "payment_link" | "payment_link_paid"
            | "payment_link.paid" => Self::PaymentLinkPaid,
            "subscription" | "subscriptionpaid" | "subscription_paid" | "subscription.paid" => {
                Self::SubscriptionPaid
            }
            _ => Self::Other,
        }
    }

    fn event_type(self, error: bool) -> &'static str {
        match self {
            Self::Sale | Self::Auth if error => "payment.failed",
            Self::Sale => "payment.succeeded",
            Self::Auth => "payment.authorized",
            Self::Capture => "payment.captured",
            Self::Void => "payment.voided",
            Self::Refund => "refund.succeeded",
            Self::Declined => "payment.failed",
            Self::InvoicePaid => "invoice.paid",
            Self::Invoice(canonical) | Self::Subscription(canonical) => canonical,
            Self::PaymentLinkPaid => "payment_link.paid",
            Self::SubscriptionPaid => "subscription.paid",
            Self::CustomerCreated => "customer.created",
            Self::Other => UNKNOWN,
        }
    }
}

impl Vendor for Strictly {
    /// The `server` block (delivery URL and Basic credentials) is removed
    /// from unmapped bodies too; a body that cannot be read and still
    /// mentions `server` is withheld rather than risk publishing them.
    fn raw_body_for_unmapped<'a>(
        &self,
        body: &'a [u8],
        _options: &MapOptions,
    ) -> Option<Cow<'a, [u8]>> {
        match read(body) {
            Ok((_, mut value)) => {
                if let Some(map) = value.as_object_mut() {
                    map.remove("server");
                }
                serde_json::to_vec(&value).ok().map(Cow::Owned)
            }
            Err(_) if contains(body, b"server") => None,
            Err(_) => Some(Cow::Borrowed(body)),
        }
    }

    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError> {
        let (text, mut vendor_data) = read(body.body())?;
        let record: Record = serde_json::from_str(&text)
            .map_err(|e| MappingError::new(format!("not a Strictly delivery record: {e}")))?;
        let data = record.data.unwrap_or_default();
        let action = Action::of(&record.action);
        let error = data
            .error
            .as_ref()
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let mut facts = Facts::default();
        let currency = match data
            .currency
            .as_ref()
            .and_then(Value::as_str)
            .map(str::trim)
        {
            None | Some("") => Some(options.currency.clone()),
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(c.to_ascii_uppercase())
            }
            Some(_) => {
                facts.skip(
                    "data.currency",
                    "not an ISO 4217 code, so no amount is given",
                );
                None
            }
        };
        let candidates = match action {
            Action::Refund => vec![
                ("amountToRefund", &data.amount_to_refund),
                ("amountRefunded", &data.amount_refunded),
                ("amount", &data.amount),
            ],
            _ => vec![("amount", &data.amount)],
        };
        let amount = currency.and_then(|currency| {
            let (field, raw) = candidates
                .into_iter()
                .find_map(|(field, raw)| raw.as_deref().map(|raw| (field, raw)))?;
            let read = amount_of(raw, field, options.amount_unit(), &currency).map(Some);
            optional(&mut facts, &format!("data.{field}"), read)
        });

        let record_id = record.id.as_ref().and_then(id_text);
        let vendor_event_id = record_id.unwrap_or_else(|| {
            let target = data
                .payment_link_id
                .as_ref()
                .and_then(id_text)
                .or_else(|| data.payment_id.as_ref().and_then(id_text));
            let transaction = data.transaction_id.as_ref().and_then(id_text);
            if target.is_none() && transaction.is_none() {
                body_identity(body.body())
            } else {
                format!(
                    "{}:{}:{}",
                    record.action,
                    target.unwrap_or_default(),
                    transaction.unwrap_or_default()
                )
            }
        });

        normalize(&mut vendor_data);
        if let Some(top) = vendor_data.as_object_mut() {
            top.remove("server");
        }

        Ok(Mapped {
            event_type: action.event_type(error).to_owned(),
            vendor_event_type: record.action.clone(),
            vendor_event_id,
            occurred_at: record
                .created_at
                .as_ref()
                .and_then(date_of)
                .or_else(|| record.date.as_ref().and_then(date_of)),
            facts: Facts {
                object: object_of(action, &data),
                amount,
                merchant: data
                    .client_id
                    .as_ref()
                    .and_then(id_text)
                    .map(|id| Merchant { id }),
                payment_method: payment_method(&data),
                vendor_data,
                ..facts
            },
        })
    }
}

/// Strict JSON first; MongoDB shell notation only when that fails. Returns the
/// JSON text (for the wire structs) and its parsed value (for `vendor_data`).
fn read(body: &[u8]) -> Result<(Cow<'_, str>, Value), MappingError> {
    super::check_depth(body)?;
    let strict = match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let text = std::str::from_utf8(body)
                .map_err(|e| MappingError::new(format!("body is not UTF-8: {e}")))?;
            return Ok((Cow::Borrowed(text), value));
        }
        Err(e) => e,
    };
    let neither = |why: String| {
        MappingError::new(format!(
            "body is neither JSON ({strict}) nor MongoDB shell notation ({why})"
        ))
    };
    let text = std::str::from_utf8(body).map_err(|e| neither(e.to_string()))?;
    let relaxed = shell::to_json(text).map_err(neither)?;
    let value = serde_json::from_str(&relaxed).map_err(|e| neither(e.to_string()))?;
    Ok((Cow::Owned(relaxed), value))
}

/// Replaces Extended JSON wrappers by plain values, everywhere in the body.
fn normalize(value: &mut Value) {
    if let Some(plain) = plain_of(value) {
        *value = plain;
        return;
    }
    match value {
        Value::Object(map) => map.values_mut().for_each(normalize),
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The plain value of a one-key Extended JSON wrapper, if `value` is one.
fn plain_of(value: &Value) -> Option<Value> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    let (key, inner) = map.iter().next()?;
    match (key.as_str(), inner) {
        ("$oid", Value::String(s)) => Some(Value::String(s.clone())),
        ("$date", Value::String(s)) => Some(Value::String(s.clone())),
        ("$date", _) => date_of(value).map(|t| Value::String(crate::canonical::rfc3339(t))),
        ("$numberLong" | "$numberInt", Value::String(s)) => s.parse::<i64>().ok().map(Value::from),
        ("$numberDecimal", Value::String(s)) => Some(Value::String(s.clone())),
        _ => None,
    }
}

/// An id as text: a string, `{"$oid": "…"}`, or a number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(map) => map.get("$oid").and_then(id_text),
        _ => None,
    }
}

/// A date: an ISO string with a zone, `{"$date": iso | millis | {"$numberLong": millis}}`,
/// or bare epoch millis (JavaScript's `Date.getTime()`).
fn date_of(value: &Value) -> Option<OffsetDateTime> {
    let millis =
        |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    match value {
        Value::String(s) => parse_rfc3339(s),
        Value::Number(n) => n.as_i64().and_then(millis),
        Value::Object(map) => match (map.get("$date"), map.get("$numberLong")) {
            (Some(inner), _) => date_of(inner),
            (None, Some(Value::String(ms))) => ms.parse().ok().and_then(millis),
            _ => None,
        },
        _ => None,
    }
}

/// Reads an amount from its literal JSON text (or an Extended JSON number
/// wrapper) in the source's unit, without floating point.
fn amount_of(
    raw: &RawValue,
    field: &str,
    unit: AmountUnit,
    currency: &str,
) -> Result<Amount, MappingError> {
    let text = raw.get().trim();
    let wrapped;
    let text = if text.starts_with('{') {
        let map: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|_| MappingError::new(format!("data.{field}: `{text}` is not a number")))?;
        wrapped = [
            "$numberInt",
            "$numberLong",
            "$numberDecimal",
            "$numberDouble",
        ]
        .iter()
        .find_map(|k| map.get(*k).and_then(Value::as_str))
        .filter(|_| map.len() == 1)
        .ok_or_else(|| MappingError::new(format!("data.{field}: `{text}` is not a number")))?
        .trim()
        .to_owned();
        wrapped.as_str()
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text
    } else {
        return Err(MappingError::new(format!(
            "data.{field}: `{text}` is not a number"
        )));
    };
    match unit {
        AmountUnit::Major => Amount::from_decimal(text, currency)
            .map_err(|e| MappingError::new(format!("data.{field}: {e}"))),
        AmountUnit::Minor => {
            let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
            whole
                .parse::<i64>()
                .ok()
                .filter(|_| fraction.bytes().all(|b| b == b'0'))
                .map(|minor| Amount::from_minor(minor, currency))
                .ok_or_else(|| {
                    MappingError::new(format!(
                        "data.{field}: `{text}` is not a whole number of minor units (amount_unit is minor)"
                    ))
                })
        }
    }
}

/// The object the event is about: the link, invoice or subscription for
/// "paid" events when its id is there, else the payment, else the processor
/// transaction.
fn object_of(action: Action, data: &Data) -> Option<ObjectRef> {
    let specific = match action {
        Action::PaymentLinkPaid => Some(("payment_link", &data.payment_link_id)),
        Action::InvoicePaid | Action::Invoice(_) => Some(("invoice", &data.invoice_id)),
        Action::SubscriptionPaid | Action::Subscription(_) => {
            Some(("subscription", &data.subscription_id))
        }
        _ => None,
    };
    specific
        .into_iter()
        .chain([
            ("payment", &data.payment_id),
            ("transaction", &data.transaction_id),
        ])
        .find_map(|(kind, id)| {
            id.as_ref().and_then(id_text).map(|id| ObjectRef {
                kind: kind.to_owned(),
                id,
            })
        })
}

/// `data.paymentMethod` or `data.card`, reduced to type, brand and last four.
fn payment_method(data: &Data) -> Option<PaymentMethod> {
    let text = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let method = data.payment_method.as_ref().or(data.card.as_ref());
    let kind = method
        .and_then(|m| text(&m.kind))
        .or_else(|| text(&data.payment_type))?
        .to_lowercase();
    Some(PaymentMethod {
        kind,
        brand: method.and_then(|m| text(&m.card_type)),
        last4: method
            .and_then(|m| text(&m.last4))
            .filter(|l| l.len() == 4 && l.bytes().all(|b| b.is_ascii_digit())),
    })
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests;
