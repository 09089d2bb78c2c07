//! USAePay (NMI) webhooks.
//!
//! Every delivery is an envelope `{type: "event", event_triggered, event_type,
//! event_body: {merchant: {merch_key}, object, changes?}, event_id}`.
//! `event_id` is documented as unique per triggered event and is our identity.
//! Quirks handled here, all from the vendor's own examples:
//! - card-updater events are subscribed as `cau.*` but arrive as
//!   `cardupdate.*`; both map to `card_update.*`;
//! - `refnum` is sometimes a number, sometimes a string;
//! - amounts are decimal strings (`"5.00"`); settlement totals are digit
//!   strings in cents without a point (`"617799"` is 6177.99);
//! - `event_triggered` has no zone: it is read as UTC (see README);
//! - no currency is ever sent: the source's `currency` (default USD) applies.
//!
//! Signature: `X-Signature` = lowercase hex HMAC-SHA256(key, raw body), no
//! timestamp (USAePay's own SDK helper), so replay protection is the
//! consumer's de-duplication on the event id.

use serde::Deserialize;
use serde_json::Value;

use super::{parse_json, parse_naive_utc, MapOptions, Mapped, MappingError, Vendor};
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
                let amount = object.amount.as_ref().or_else(|| {
                    object
                        .amount_detail
                        .as_ref()
                        .and_then(|d| d.amount.as_ref())
                });
                if let Some(amount) = amount {
                    let text = text_of(amount).ok_or_else(|| {
                        MappingError::new("event_body.object.amount is not a number or string")
                    })?;
                    facts.amount = Some(Amount::from_decimal(&text, &currency).map_err(|e| {
                        MappingError::new(format!("event_body.object.amount: {e}"))
                    })?);
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
                facts.status_change = envelope.event_body.changes.as_ref().and_then(status_change);
            }
            Family::CardUpdate => {
                facts.status_change = envelope.event_body.changes.as_ref().and_then(status_change);
            }
            Family::Settlement => {
                let minor = |v: &Option<Value>,
                             field: &str|
                 -> Result<Option<Amount>, MappingError> {
                    match v.as_ref().and_then(text_of) {
                        None => Ok(None),
                        Some(t) => t
                            .parse::<i64>()
                            .map(|m| Some(Amount::from_minor(m, &currency)))
                            .map_err(|_| {
                                MappingError::new(format!(
                                    "event_body.object.{field}: `{t}` is not a whole number of cents"
                                ))
                            }),
                    }
                };
                facts.settlement = Some(Settlement {
                    batch_number: object.batchnum.as_ref().and_then(text_of),
                    sales_total: minor(&object.totalsales, "totalsales")?,
                    sales_count: object.numsales.as_ref().and_then(integer_of),
                    credits_total: minor(&object.totalcredits, "totalcredits")?,
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

/// The first changed field, preferring `status`, as text before and after.
fn status_change(changes: &Changes) -> Option<StatusChange> {
    let new = changes.new.as_object()?;
    let old = changes.old.as_object();
    let field = if new.contains_key("status") {
        "status".to_owned()
    } else {
        new.keys().next()?.clone()
    };
    let as_text = |v: Option<&Value>| v.and_then(text_of).filter(|s| !s.is_empty());
    Some(StatusChange {
        from: as_text(old.and_then(|o| o.get(&field))),
        to: as_text(new.get(&field)),
        field,
    })
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
        let verified = Verified::assume_verified_for_tests(body.to_vec());
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
}
