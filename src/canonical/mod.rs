//! The one event shape every consumer sees, whatever the vendor.
//!
//! An [`Event`] is a CloudEvents 1.0 JSON envelope; its `data` is
//! [`EventData`], described by `schemas/canonical-event.schema.json`. The
//! envelope's `id` is deterministic (a hash of the source and the vendor's own
//! event identity), so a vendor's retries of one event carry the same id and
//! consumers can de-duplicate on it.
//!
//! Amounts never pass through floating point: [`Amount`] keeps a decimal
//! string and an integer count of minor units, both derived from the vendor's
//! text or integer by exact arithmetic.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Version of the `data` schema; bumped only on breaking changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The `dataschema` URI; equals the `$id` of `schemas/canonical-event.schema.json`.
pub const DATASCHEMA: &str = "urn:hookgate:schema:canonical-event:1";

/// The AMQP/HTTP content type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Type given to authenticated bodies that no mapping understands.
pub const UNMAPPED: &str = "unmapped";

/// Type given to well-formed vendor events whose kind we do not know.
pub const UNKNOWN: &str = "unknown";

/// A canonical event: CloudEvents 1.0 envelope plus our `data`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// Deterministic id: equal for retries of the same vendor event.
    pub id: String,
    /// `/sources/{source_id}`: the configured endpoint the event came through.
    pub source: String,
    /// Our vocabulary (`payment.succeeded`, ...), never the vendor's.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The id of the object the event is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the vendor says it happened (or when it arrived, if it does not say).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// [`DATASCHEMA`].
    pub dataschema: &'static str,
    /// Extension: the vendor module name.
    pub vendor: &'static str,
    /// Extension: the vendor's own event name.
    pub vendoreventtype: String,
    /// The normalized payload.
    pub data: EventData,
}

/// The `data` of every event; see the JSON Schema for field semantics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventData {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Vendor module name.
    pub vendor: &'static str,
    /// Configured source id.
    pub source_id: String,
    /// The vendor's event name, verbatim.
    pub vendor_event_type: String,
    /// The vendor's event identity (or one derived from the body when it has none).
    pub vendor_event_id: String,
    /// When hookgate received the request (RFC 3339, UTC).
    pub received_at: String,
    /// When the vendor says the event happened (RFC 3339).
    pub occurred_at: String,
    /// The vendor-specific facts, flattened in.
    #[serde(flatten)]
    pub facts: Facts,
}

/// The normalized facts a vendor mapping extracts; every part is optional
/// because vendors differ in what they send.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Facts {
    /// The object the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The money the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// Tip included in `amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tip: Option<Amount>,
    /// Discount applied before `amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount: Option<Amount>,
    /// The original transaction's amount, when the vendor reports it and it
    /// differs from `amount` (a partial refund of a larger sale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_amount: Option<Amount>,
    /// Everything refunded on the payment so far, when the vendor reports
    /// that running total beside this refund's own `amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_total: Option<Amount>,
    /// The merchant account at the vendor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<Merchant>,
    /// A vendor status code and its name (Nexio numeric statuses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Why a payment failed, when the vendor says (a decline code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// A status transition the vendor reported (USAePay `changes.old/new`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_change: Option<StatusChange>,
    /// How the payer paid; never a full card number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethod>,
    /// Settlement batch totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
    /// Inventory quantities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// The payer, only when a source opts in to personal data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    /// Why the body could not be mapped, and the body itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<Unmapped>,
    /// Whether a vendor look-up filled this event in (Nexio thin pings);
    /// absent when none was needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
    /// Optional fields the vendor sent in a form the mapping could not read
    /// exactly; each was left out of `data` (it stays in `vendor_data`), so
    /// one odd figure never costs the event its type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// The vendor's body, parsed, minus known secrets; `null` when unparseable.
    pub vendor_data: Value,
}

impl Facts {
    /// Notes that the optional field at `field` (a dotted path into the
    /// vendor's body) was left out, and why. The reason goes through the
    /// same scrubbing as an `unmapped` reason: it never quotes the body.
    pub fn skip(&mut self, field: &str, reason: &str) {
        // Readers often name the field themselves; once is enough.
        let reason = reason
            .strip_prefix(field)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(reason);
        self.skipped.push(Skipped {
            field: crate::scrub::one_line(field, 120),
            reason: crate::scrub::without_quoted_values(reason, MAX_SKIP_REASON_CHARS),
        });
    }
}

/// Longest reason kept for one skipped field.
const MAX_SKIP_REASON_CHARS: usize = 200;

/// One optional field left out of `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Where it was in the vendor's body (`event_body.object.totalsales`).
    pub field: String,
    /// Why it could not be read; never quotes the value.
    pub reason: String,
}

/// Why a payment failed, as the vendor coded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The vendor field that said so (`data.error`, `kountResponse.status`).
    pub field: String,
    /// The vendor's code, verbatim, when it sends one (`"435"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What the code means (`declined`, `declined_by_kount`), or `unknown`.
    pub reason: String,
}

/// `{type, id}` of the object an event concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Our noun: `transaction`, `refund`, `batch`, `product`, `card_update`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The vendor's id for it.
    pub id: String,
}

/// A merchant account at the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// The vendor's merchant id or key.
    pub id: String,
}

/// A vendor status code with its documented name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Which vendor field this is (`transactionStatus`, `payoutStatus`, ...).
    pub field: String,
    /// The numeric code, when the vendor uses codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The documented name, or `unknown` for undocumented codes.
    pub name: String,
}

/// A change of one field from one value to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The field that changed (`status`, `updated_card`, ...).
    pub field: String,
    /// Value before, as text; `null` when it had none.
    pub from: Option<String>,
    /// Value after, as text; `null` when it has none.
    pub to: Option<String>,
}

/// Card or other method, reduced to what is safe to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// `card`, `cash`, `ach`, ... as the vendor names it, lowercased.
    #[serde(rename = "type")]
    pub kind: String,
    /// Card brand when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Last four digits when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
}

/// Totals of a settled (or failed) batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Batch number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_number: Option<String>,
    /// Sum of sales in the batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_total: Option<Amount>,
    /// Number of sales.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_count: Option<i64>,
    /// Sum of credits (refunds) in the batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_total: Option<Amount>,
    /// Why a batch failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// Stock levels after an inventory change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Stock location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_id: Option<String>,
    /// Quantity on hand after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity_on_hand: Option<i64>,
    /// Signed change applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity_change: Option<i64>,
}

/// The payer's contact details; published only when a source opts in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Full name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Postal address, as the vendor wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Outcome of enriching an event from the vendor's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrichment {
    /// Whether the vendor's record filled the event in.
    pub status: EnrichmentStatus,
    /// Why it failed; absent when complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Look-up attempts made.
    pub attempts: u32,
}

impl Enrichment {
    /// The vendor's record filled the event in.
    pub fn complete(attempts: u32) -> Self {
        Self {
            status: EnrichmentStatus::Complete,
            reason: None,
            attempts,
        }
    }

    /// No record could be used; the event carries the ping's facts only.
    pub fn failed(reason: impl Into<String>, attempts: u32) -> Self {
        Self {
            status: EnrichmentStatus::Failed,
            reason: Some(reason.into()),
            attempts,
        }
    }
}

/// `data.enrichment.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrichmentStatus {
    /// Facts filled from the vendor's record.
    Complete,
    /// No record could be used; `reason` says why.
    Failed,
}

/// How `data.unmapped.raw_body` carries the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// The body was UTF-8 and is carried as text.
    Utf8,
    /// The body was not UTF-8 and is carried as standard base64.
    Base64,
}

/// An authenticated body that could not be mapped, kept whole for `remap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmapped {
    /// What the mapper could not understand.
    pub reason: String,
    /// `utf8` or `base64`.
    pub raw_body_encoding: BodyEncoding,
    /// The body exactly as received.
    pub raw_body: String,
}

/// A sum of money in a currency, exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// Decimal string with the currency's number of fraction digits (`"5.00"`).
    pub value: String,
    /// The same sum in minor units (`500`).
    pub minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// Why a vendor's amount could not be read exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal number.
    #[error("`{0}` is not a decimal amount")]
    NotDecimal(String),
    /// More fraction digits than the currency has, and not just trailing zeros.
    #[error("`{0}` has more decimals than {1} allows")]
    TooPrecise(String, String),
    /// Does not fit in 64-bit minor units.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Number of minor-unit digits of an ISO 4217 currency.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

impl Amount {
    /// From a count of minor units (`360` GBP is 3.60).
    pub fn from_minor(minor: i64, currency: &str) -> Self {
        let exp = currency_exponent(currency);
        let value = if exp == 0 {
            minor.to_string()
        } else {
            let scale = 10_i64.pow(exp) as u64;
            let abs = minor.unsigned_abs();
            let sign = if minor < 0 { "-" } else { "" };
            format!(
                "{sign}{}.{:0width$}",
                abs / scale,
                abs % scale,
                width = exp as usize
            )
        };
        Self {
            value,
            minor,
            currency: currency.to_owned(),
        }
    }

    /// From a decimal string in major units (`"5.00"` USD is 500 minor).
    pub fn from_decimal(text: &str, currency: &str) -> Result<Self, AmountError> {
        let not_decimal = || AmountError::NotDecimal(text.to_owned());
        let trimmed = text.trim();
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || whole.len() > 20
        {
            return Err(not_decimal());
        }
        let exp = currency_exponent(currency) as usize;
        let (kept, dropped) = if fraction.len() > exp {
            fraction.split_at(exp)
        } else {
            (fraction, "")
        };
        if dropped.bytes().any(|b| b != b'0') {
            return Err(AmountError::TooPrecise(
                text.to_owned(),
                currency.to_owned(),
            ));
        }
        let overflow = || AmountError::Overflow(text.to_owned());
        let mut minor: i64 = 0;
        for b in whole.bytes().chain(kept.bytes()) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        for _ in kept.len()..exp {
            minor = minor.checked_mul(10).ok_or_else(overflow)?;
        }
        if negative {
            minor = -minor;
        }
        Ok(Self::from_minor(minor, currency))
    }
}

/// What a vendor mapping produces; the pipeline adds the envelope.
/// Serializable, so a deferred look-up can keep it on disk and finish it
/// later without reading the vendor's body again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Mapped {
    /// Canonical type (`payment.succeeded`, `unknown`, ...).
    pub event_type: String,
    /// The vendor's event name, verbatim.
    pub vendor_event_type: String,
    /// Stable identity of this vendor event; equal across the vendor's retries.
    pub vendor_event_id: String,
    /// When the vendor says it happened; `None` uses the receipt time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    /// Everything else the mapping extracted.
    pub facts: Facts,
}

/// Formats a time as RFC 3339 (`2021-04-07T15:14:26Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The vendors hookgate understands; the `vendor` key of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VendorKind {
    /// USAePay (NMI) webhooks: `event_type` envelopes, optional `X-Signature`.
    Usaepay,
    /// Strictly / PayWithZero delivery records, Basic auth.
    Strictly,
    /// Nexio simplified pings (and legacy signed webhooks).
    Nexio,
    /// Sticky (sticky.to) activity webhooks, `v2` key only.
    Stickypay,
    /// Any sender, read by the source's `[source.map]`.
    Generic,
}

impl VendorKind {
    /// Every vendor, for validation messages and exhaustive tests.
    pub const ALL: [VendorKind; 5] = [
        Self::Usaepay,
        Self::Strictly,
        Self::Nexio,
        Self::Stickypay,
        Self::Generic,
    ];

    /// The config and routing name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Usaepay => "usaepay",
            Self::Strictly => "strictly",
            Self::Nexio => "nexio",
            Self::Stickypay => "stickypay",
            Self::Generic => "generic",
        }
    }

    /// Parses the config name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// A deterministic UUID-shaped id (version 8, RFC 9562) from a hash of the
/// source and the vendor event's identity: stable across retries, distinct
/// across sources.
pub fn event_id(vendor: VendorKind, source_id: &str, vendor_event_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"hookgate/event-id/v1\0");
    h.update(vendor.name().as_bytes());
    h.update(b"\0");
    h.update(source_id.as_bytes());
    h.update(b"\0");
    h.update(vendor_event_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // Version 8 (custom) with the RFC 9562 variant, lowercase hyphenated.
    uuid::Uuid::new_v8(b).hyphenated().to_string()
}

/// A stable identity for bodies that carry none: the hash of the exact bytes,
/// so a vendor's byte-identical retries share it.
pub fn body_identity(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

impl Event {
    /// Wraps a mapping's output in the envelope.
    pub fn from_mapped(
        vendor: VendorKind,
        source_id: &str,
        mut mapped: Mapped,
        received_at: OffsetDateTime,
    ) -> Self {
        // An id the vendor sent empty names nothing: no object, no subject,
        // no merchant (the schema requires each id to be non-empty).
        if mapped
            .facts
            .object
            .as_ref()
            .is_some_and(|o| o.id.is_empty())
        {
            mapped.facts.object = None;
        }
        if mapped
            .facts
            .merchant
            .as_ref()
            .is_some_and(|m| m.id.is_empty())
        {
            mapped.facts.merchant = None;
        }
        let received = rfc3339(received_at);
        let occurred = mapped
            .occurred_at
            .map(rfc3339)
            .unwrap_or_else(|| received.clone());
        let subject = mapped.facts.object.as_ref().map(|o| o.id.clone());
        Self {
            specversion: "1.0",
            id: event_id(vendor, source_id, &mapped.vendor_event_id),
            source: format!("/sources/{source_id}"),
            event_type: mapped.event_type,
            subject,
            time: occurred.clone(),
            datacontenttype: "application/json",
            dataschema: DATASCHEMA,
            vendor: vendor.name(),
            vendoreventtype: mapped.vendor_event_type.clone(),
            data: EventData {
                schema_version: SCHEMA_VERSION,
                vendor: vendor.name(),
                source_id: source_id.to_owned(),
                vendor_event_type: mapped.vendor_event_type,
                vendor_event_id: mapped.vendor_event_id,
                received_at: received,
                occurred_at: occurred,
                facts: mapped.facts,
            },
        }
    }

    /// An authenticated body no mapping understood: published as `unmapped`
    /// with the raw body and the reason, so nothing authenticated is dropped.
    /// `published` is the (possibly redacted) body to carry; `None` withholds
    /// it. The identity always derives from the original `body`, so the
    /// vendor's retries share an id.
    pub fn unmapped(
        vendor: VendorKind,
        source_id: &str,
        body: &[u8],
        published: Option<&[u8]>,
        reason: String,
        received_at: OffsetDateTime,
    ) -> Self {
        let reason = match published {
            Some(_) => reason,
            None => format!(
                "{reason} (raw body withheld: it may hold secrets and could not be redacted)"
            ),
        };
        let (raw_body_encoding, raw_body) = match std::str::from_utf8(published.unwrap_or_default())
        {
            Ok(text) => (BodyEncoding::Utf8, text.to_owned()),
            Err(_) => {
                use base64::Engine;
                (
                    BodyEncoding::Base64,
                    base64::engine::general_purpose::STANDARD.encode(published.unwrap_or_default()),
                )
            }
        };
        let mapped = Mapped {
            event_type: UNMAPPED.to_owned(),
            vendor_event_type: String::new(),
            vendor_event_id: body_identity(body),
            occurred_at: None,
            facts: Facts {
                unmapped: Some(Unmapped {
                    reason,
                    raw_body_encoding,
                    raw_body,
                }),
                vendor_data: Value::Null,
                ..Facts::default()
            },
        };
        Self::from_mapped(vendor, source_id, mapped, received_at)
    }

    /// `{source_id}.{type}`: consumers bind `*.payment.#` or `usaepay-main.#`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.data.source_id, self.event_type)
    }
}

#[cfg(test)]
mod tests;
