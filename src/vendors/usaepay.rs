//! USAePay (NMI) webhooks.
//!
//! Every delivery is an envelope `{type: "event", event_triggered, event_type,
//! event_body: {merchant: {merch_key}, object, changes?}, event_id}`.
//! `event_id` is documented as unique per triggered event and is our identity.
//! Quirks handled here, all from the vendor's own examples:
//! - card-updater events are subscribed as `cau.*` but arrive as
//!   `cardupdate.*`; both map to `card_update.*`;
//! - `refnum` is sometimes a number, sometimes a string;
//! - amounts are decimal strings (`"5.00"`), in a field that depends on the
//!   event (docs/vendors.md §7.3): sales, failures, captures, adjustments and
//!   queued sales carry `amount` (the seed: `amount_detail.amount`); a
//!   refund carries `auth_amount`; voids, unvoids and refund voids carry only
//!   `amount_detail.original_amount`. The first of `amount`,
//!   `amount_detail.amount`, `auth_amount`, `amount_detail.original_amount`
//!   present is the canonical `amount`; `original_amount` is published too
//!   when it differs (a partial refund). `sale.failure`'s `auth_amount` of
//!   `"0.00"` is never the amount: `amount` comes first;
//! - settlement totals come as digit strings in cents without a point
//!   (`"617799"` is 6177.99, the docs) or as decimal strings (`"5432.10"`,
//!   sandbox batches and a .NET SDK's tests); both are read;
//! - `changes` name ACH statuses by letter (`P`, `B`, `S`, `R`, `V`, `E`) in
//!   the docs and by word elsewhere; both become the word (`pending`,
//!   `submitted`, `settled`, `returned`, `voided`, `failed`), and card-updater
//!   words are lowercased, so `status_change` has one vocabulary;
//! - an optional figure that cannot be read exactly is left out and named in
//!   `data.skipped`, never a reason to publish the event as `unmapped`;
//! - `event_triggered` has no zone: it is read as UTC (see docs/consumers.md);
//! - no currency is ever sent: the source's `currency` (default USD) applies.
//!
//! Signature: `X-Signature` = lowercase hex HMAC-SHA256(key, raw body), no
//! timestamp (USAePay's own SDK helper), so replay protection is the
//! consumer's de-duplication on the event id.

use serde::Deserialize;
use serde_json::Value;

use super::{optional, parse_json, parse_naive_utc, MapOptions, Mapped, MappingError, Vendor};
use crate::auth::{SignatureScheme, Verified};
use crate::canonical::{
    Amount, Facts, Inventory, Merchant, ObjectRef, PaymentMethod, Settlement, StatusChange, UNKNOWN,
};

/// The USAePay vendor module.
pub struct Usaepay;

#[derive(Deserialize)]
struct Envelope {
    event_triggered: Option<String>,
    event_type: String,
    event_id: String,
    #[serde(default)]
    event_body: Body,
}

#[derive(Deserialize, Default)]
struct Body {
    merchant: Option<MerchantWire>,
    #[serde(default)]
    object: Object,
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct MerchantWire {
    merch_key: Option<String>,
}

/// The subset of USAePay objects we read; everything stays in `vendor_data`.
#[derive(Deserialize, Default)]
struct Object {
    #[serde(rename = "type")]
    kind: Option<String>,
    key: Option<String>,
    amount: Option<Value>,
    auth_amount: Option<Value>,
    amount_detail: Option<AmountDetail>,
    currency: Option<String>,
    creditcard: Option<CreditCard>,
    // settlement batch
    batchnum: Option<Value>,
    totalsales: Option<Value>,
    numsales: Option<Value>,
    totalcredits: Option<Value>,
    reason: Option<String>,
    // inventory
    locationid: Option<Value>,
    qtyonhand: Option<Value>,
    qtyonhand_change: Option<Value>,
}

#[derive(Deserialize)]
struct AmountDetail {
    amount: Option<Value>,
    original_amount: Option<Value>,
}

#[derive(Deserialize)]
struct CreditCard {
    #[serde(rename = "type")]
    brand: Option<String>,
    number: Option<String>,
}

#[derive(Deserialize)]
struct Changes {
    #[serde(default)]
    old: Value,
    #[serde(default)]
    new: Value,
}

impl Vendor for Usaepay {
    fn signature_scheme(&self) -> Option<SignatureScheme> {
        Some(SignatureScheme::HexBody {
            header: "x-signature",
        })
    }

    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError> {
        // Parsed once: the fields read here come out of the same tree that is
        // published as `vendor_data`.
        let vendor_data: Value = parse_json(body.body())?;
        let envelope = match Envelope::deserialize(&vendor_data) {
            Ok(envelope) => envelope,
            // Rare, and the tree cannot say where it went wrong: the text can.
            Err(_) => parse_json(body.body())?,
        };
        if envelope.event_id.trim().is_empty() {
            return Err(MappingError::new("event_id is empty"));
        }
        let (event_type, family) = canonical_type(&envelope.event_type);
        let object = &envelope.event_body.object;
        let currency = object
            .currency
            .as_deref()
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase)
            .unwrap_or_else(|| options.currency.clone());

        let mut facts = Facts {
            object: object.key.as_ref().map(|id| ObjectRef {
                kind: object_kind(object.kind.as_deref(), family),
                id: id.clone(),
            }),
            merchant: envelope
                .event_body
                .merchant
                .as_ref()
                .and_then(|m| m.merch_key.clone())
                .map(|id| Merchant { id }),
            vendor_data,
            ..Facts::default()
        };

        match family {
            Family::Transaction => {
                let detail = object.amount_detail.as_ref();
                let original = detail.and_then(|d| d.original_amount.as_ref());
                // Per event type (USAePay's full examples, docs/vendors.md
                // §7.3): sales carry `amount` (the seed: `amount_detail.amount`),
                // a refund `auth_amount`, voids only the original amount.
                let candidates = [
                    ("event_body.object.amount", object.amount.as_ref()),
                    (
                        "event_body.object.amount_detail.amount",
                        detail.and_then(|d| d.amount.as_ref()),
                    ),
                    ("event_body.object.auth_amount", object.auth_amount.as_ref()),
                    ("event_body.object.amount_detail.original_amount", original),
                ];
                if let Some((field, value)) = candidates
                    .into_iter()
                    .find_map(|(field, v)| v.filter(|v| !v.is_null()).map(|v| (field, v)))
                {
                    let read = decimal_amount(value, &currency);
                    facts.amount = optional(&mut facts, field, read);
                }
                if let Some(value) = original.filter(|v| !v.is_null()) {
                    let read = decimal_amount(value, &currency);
                    let original = optional(
                        &mut facts,
                        "event_body.object.amount_detail.original_amount",
                        read,
                    );
                    facts.original_amount = original
                        .filter(|o| facts.amount.as_ref().is_some_and(|a| a.minor != o.minor));
                }
                facts.payment_method = object.creditcard.as_ref().map(|card| PaymentMethod {
                    kind: "card".to_owned(),
                    brand: card.brand.clone().filter(|b| !b.is_empty()),
                    last4: card.number.as_deref().and_then(last4),
                });
            }
            Family::Ach => {
                facts.payment_method = Some(PaymentMethod {
                    kind: "ach".to_owned(),
                    ..PaymentMethod::default()
                });
                facts.status_change = envelope
                    .event_body
                    .changes
                    .as_ref()
                    .and_then(|c| status_change(c, family));
            }
            Family::CardUpdate => {
                facts.status_change = envelope
                    .event_body
                    .changes
                    .as_ref()
                    .and_then(|c| status_change(c, family));
            }
            Family::Settlement => {
                let mut total = |v: &Option<Value>, field: &str| {
                    v.as_ref().and_then(|v| {
                        let read = settlement_total(v, &currency);
                        optional(&mut facts, &format!("event_body.object.{field}"), read)
                    })
                };
                let sales_total = total(&object.totalsales, "totalsales");
                let credits_total = total(&object.totalcredits, "totalcredits");
                facts.settlement = Some(Settlement {
                    batch_number: object.batchnum.as_ref().and_then(text_of),
                    sales_total,
                    sales_count: object.numsales.as_ref().and_then(integer_of),
                    credits_total,
                    failure_reason: object.reason.clone(),
                });
            }
            Family::Inventory => {
                facts.inventory = Some(Inventory {
                    location_id: object.locationid.as_ref().and_then(text_of),
                    quantity_on_hand: object.qtyonhand.as_ref().and_then(integer_of),
                    quantity_change: object.qtyonhand_change.as_ref().and_then(integer_of),
                });
            }
            Family::Other => {}
        }

        Ok(Mapped {
            event_type,
            vendor_event_type: envelope.event_type,
            vendor_event_id: envelope.event_id,
            occurred_at: envelope
                .event_triggered
                .as_deref()
                .and_then(parse_naive_utc),
            facts,
        })
    }
}

/// Groups of USAePay events that share a body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Transaction,
    Ach,
    CardUpdate,
    Settlement,
    Inventory,
    Other,
}

/// USAePay's event name to ours, and the body shape to expect.
fn canonical_type(vendor_type: &str) -> (String, Family) {
    let fixed = match vendor_type {
        "transaction.sale.success" => Some("payment.succeeded"),
        "transaction.sale.failure" => Some("payment.failed"),
        "transaction.sale.voided" => Some("payment.voided"),
        "transaction.sale.unvoided" => Some("payment.unvoided"),
        "transaction.sale.captured" => Some("payment.captured"),
        "transaction.sale.adjusted" => Some("payment.adjusted"),
        "transaction.sale.queued" => Some("payment.queued"),
        "transaction.refund.success" => Some("refund.succeeded"),
        "transaction.refund.voided" => Some("refund.voided"),
        "settlement.batch.success" => Some("settlement.batch_succeeded"),
        "settlement.batch.failure" => Some("settlement.batch_failed"),
        _ => None,
    };
    if let Some(t) = fixed {
        let family = if t.starts_with("settlement.") {
            Family::Settlement
        } else {
            Family::Transaction
        };
        return (t.to_owned(), family);
    }
    let suffix = |prefix: &str| {
        vendor_type
            .strip_prefix(prefix)
            .filter(|rest| is_word(rest))
    };
    if let Some(rest) = suffix("ach.") {
        return (format!("ach.{rest}"), Family::Ach);
    }
    if let Some(rest) = suffix("cau.").or_else(|| suffix("cardupdate.")) {
        return (format!("card_update.{rest}"), Family::CardUpdate);
    }
    if let Some(rest) = suffix("product.inventory.") {
        return (format!("inventory.{rest}"), Family::Inventory);
    }
    (UNKNOWN.to_owned(), Family::Other)
}

/// A routing-key-safe word: the vendor's suffix becomes part of our type.
fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn object_kind(vendor_kind: Option<&str>, family: Family) -> String {
    match (vendor_kind, family) {
        (_, Family::CardUpdate) => "card_update".to_owned(),
        (_, Family::Settlement) => "batch".to_owned(),
        (_, Family::Inventory) => "product".to_owned(),
        (Some(k), _) if is_word(k) => k.to_owned(),
        _ => "transaction".to_owned(),
    }
}

/// ACH status letters in `changes` (USAePay's REST docs, docs/vendors.md
/// §2.5) and the word each stands for, which is what USAePay's own status
/// words (a .NET SDK's tests, §7.3) and the event names use.
const ACH_STATUS_LETTERS: [(&str, &str); 6] = [
    ("P", "pending"),
    ("B", "submitted"),
    ("S", "settled"),
    ("R", "returned"),
    ("V", "voided"),
    ("E", "failed"),
];

/// One vocabulary for a `status` value, whichever USAePay sent: ACH letters
/// become their word, words are lowercased (`Pending` → `pending`). A value
/// outside both is kept as sent.
fn status_word(value: String, family: Family) -> String {
    if family == Family::Ach {
        if let Some((_, word)) = ACH_STATUS_LETTERS.iter().find(|(l, _)| *l == value) {
            return (*word).to_owned();
        }
    }
    if value.len() > 1 && value.bytes().all(|b| b.is_ascii_alphabetic() || b == b' ') {
        return value.to_ascii_lowercase();
    }
    value
}

/// The first changed field, preferring `status`, as text before and after;
/// a status in one vocabulary ([`status_word`]).
fn status_change(changes: &Changes, family: Family) -> Option<StatusChange> {
    let new = changes.new.as_object()?;
    let old = changes.old.as_object();
    let field = if new.contains_key("status") {
        "status".to_owned()
    } else {
        new.keys().next()?.clone()
    };
    let as_text = |v: Option<&Value>| {
        let text = v.and_then(text_of).filter(|s| !s.is_empty())?;
        Some(if field == "status" {
            status_word(text, family)
        } else {
            text
        })
    };
    Some(StatusChange {
        from: as_text(old.and_then(|o| o.get(&field))),
        to: as_text(new.get(&field)),
        field,
    })
}

/// A transaction amount: a decimal string in major units (`"5.00"`).
fn decimal_amount(value: &Value, currency: &str) -> Result<Option<Amount>, MappingError> {
    let text = text_of(value).ok_or_else(|| MappingError::new("not a number or string"))?;
    Amount::from_decimal(&text, currency)
        .map(Some)
        .map_err(|e| MappingError::new(e.to_string()))
}

/// A settlement total in either form USAePay sends: a digit string in
/// cents without a point (`"617799"` is 6177.99, the docs' example) or a
/// decimal string in major units (`"5432.10"`, sandbox batch responses and
/// a .NET SDK's tests, docs/vendors.md §7.3).
fn settlement_total(value: &Value, currency: &str) -> Result<Option<Amount>, MappingError> {
    let text = text_of(value).ok_or_else(|| MappingError::new("not a number or string"))?;
    let text = text.trim();
    if text.contains('.') {
        return Amount::from_decimal(text, currency)
            .map(Some)
            .map_err(|e| MappingError::new(e.to_string()));
    }
    text.parse::<i64>()
        .map(|minor| Some(Amount::from_minor(minor, currency)))
        .map_err(|_| MappingError::new("neither cents nor a decimal amount"))
}

/// Strings stay strings; numbers and booleans become their JSON text.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer given as a number or a signed digit string (`"+300"`, `"-6"`).
fn integer_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let s = s.trim();
            s.strip_prefix('+').unwrap_or(s).parse().ok()
        }
        _ => None,
    }
}

/// Last four digits of a masked card number (`4444xxxxxxxxx7779` → `7779`).
fn last4(number: &str) -> Option<String> {
    let tail: String = number
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (tail.len() == 4 && tail.bytes().all(|b| b.is_ascii_digit())).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_of_the_wrong_shape_is_refused_with_where_it_went_wrong() {
        let body = br#"{"event_type":"transaction.sale.success","event_id":7}"#;
        let verified = crate::test_util::verified(body.to_vec());
        let Err(error) = Usaepay.map(&verified, &MapOptions::default()) else {
            panic!("a numeric event_id is refused");
        };
        assert!(
            error.reason().contains("expected a string")
                && error.reason().contains(" at line 1 column "),
            "{}",
            error.reason()
        );
    }

    #[test]
    fn every_documented_event_type_has_a_canonical_type() {
        let cases = [
            ("transaction.sale.success", "payment.succeeded"),
            ("transaction.sale.failure", "payment.failed"),
            ("transaction.sale.voided", "payment.voided"),
            ("transaction.sale.unvoided", "payment.unvoided"),
            ("transaction.sale.captured", "payment.captured"),
            ("transaction.sale.adjusted", "payment.adjusted"),
            ("transaction.sale.queued", "payment.queued"),
            ("transaction.refund.success", "refund.succeeded"),
            ("transaction.refund.voided", "refund.voided"),
            ("ach.submitted", "ach.submitted"),
            ("ach.settled", "ach.settled"),
            ("ach.returned", "ach.returned"),
            ("ach.voided", "ach.voided"),
            ("ach.failed", "ach.failed"),
            ("ach.note_added", "ach.note_added"),
            ("cau.created", "card_update.created"),
            ("cau.submitted", "card_update.submitted"),
            ("cau.updated_expiration", "card_update.updated_expiration"),
            ("cau.updated_card", "card_update.updated_card"),
            ("cau.contact_customer", "card_update.contact_customer"),
            ("cau.account_closed", "card_update.account_closed"),
            ("cardupdate.created", "card_update.created"),
            ("cardupdate.account_closed", "card_update.account_closed"),
            ("product.inventory.ordered", "inventory.ordered"),
            ("product.inventory.adjusted", "inventory.adjusted"),
            ("settlement.batch.success", "settlement.batch_succeeded"),
            ("settlement.batch.failure", "settlement.batch_failed"),
            ("transaction.sale.exploded", "unknown"),
            ("ach.", "unknown"),
            ("ach.Weird.Key#", "unknown"),
        ];
        for (vendor, ours) in cases {
            assert_eq!(canonical_type(vendor).0, ours, "{vendor}");
        }
    }

    #[test]
    fn helpers_read_the_vendor_quirks() {
        assert_eq!(integer_of(&Value::from("+300")), Some(300));
        assert_eq!(integer_of(&Value::from("-6")), Some(-6));
        assert_eq!(integer_of(&Value::from(127)), Some(127));
        assert_eq!(last4("4444xxxxxxxxx7779").as_deref(), Some("7779"));
        assert_eq!(last4("xxxx"), None);
    }

    #[test]
    fn settlement_totals_are_read_as_cents_or_as_decimals() {
        let minor = |v: Value| settlement_total(&v, "USD").map(|a| a.map(|a| a.minor));
        assert_eq!(minor(Value::from("617799")), Ok(Some(617_799)));
        assert_eq!(minor(Value::from("000")), Ok(Some(0)));
        assert_eq!(minor(Value::from("5432.10")), Ok(Some(543_210)));
        assert_eq!(minor(Value::from(41)), Ok(Some(41)));
        assert!(minor(Value::from("5,432.10")).is_err());
        assert!(minor(Value::from("54.321")).is_err(), "not rounded");
    }

    #[test]
    fn status_letters_and_words_reach_one_vocabulary() {
        for (sent, family, word) in [
            ("P", Family::Ach, "pending"),
            ("B", Family::Ach, "submitted"),
            ("S", Family::Ach, "settled"),
            ("R", Family::Ach, "returned"),
            ("V", Family::Ach, "voided"),
            ("E", Family::Ach, "failed"),
            ("submitted", Family::Ach, "submitted"),
            ("Pending", Family::CardUpdate, "pending"),
            ("S", Family::CardUpdate, "S"),
            ("X", Family::Ach, "X"),
        ] {
            assert_eq!(status_word(sent.to_owned(), family), word, "{sent}");
        }
    }
}
