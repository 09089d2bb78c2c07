//! Nexio (nexiopay) webhooks, both of Nexio's mutually exclusive workflows.
//!
//! Nexio lets a merchant use either the **simplified** ("new") workflow or the
//! **legacy** one, never both; one mapping reads both and tells them apart by
//! shape: a legacy body nests its record in a `data` object, a simplified
//! body is flat.
//!
//! **Simplified workflow** (seed 002, "Webhook body examples"): unsigned, flat
//! thin pings `{eventType, <status codes>, <object id>}` with `eventType` one
//! of `TRANSACTION`, `PAYOUT`, `SPENDBACK`, `DECLINE_RECOVERY`,
//! `PROCESSOR_ONBOARDING`. Ids arrive as numbers or strings; both are read,
//! numbers as their decimal text. Nexio documents no authentication for these
//! (IP allow-list only), so sources use a secret URL token.
//!
//! **Legacy workflow**: `{eventType: "TRANSACTION_AUTHORIZED", data: {id,
//! merchantId, transactionDate, amount, currency, transactionStatus, ...}}`,
//! optionally signed with `Nexio-signature: t=<unix>,v1=<hex>` = HMAC-SHA256
//! over `t + "." + raw body` (hence [`SignatureScheme::TimestampedHex`], used
//! only when a source configures `hmac`). Legacy amounts are JSON numbers in
//! major units; their literal text is read without floating point.
//!
//! **Declines** (docs/vendors.md §7.1, from Nexio's own plugins). Nexio has
//! no `TRANSACTION_DECLINED`: a declined card arrives as the event it would
//! have been (`TRANSACTION_AUTHORIZED`, ...) with the decline in `data`. So
//! for legacy authorized, captured, pending and settled events, any
//! non-empty `data.error` code (435 `declined`, 431 `declined_by_kount`,
//! 436/438/440 and others `unknown`), or a `gatewayResponse.status` or
//! `kountResponse.status` of `declined`, makes the event `payment.failed`
//! with `data.failure {field, code, reason}`. A Kount `review` makes it
//! `payment.held`: neither authorized nor declined until the merchant
//! decides. `token.error` is never read (it is present and empty on good
//! captures). Refunds and voids keep their type.
//!
//! **Fail callbacks.** A payment request's `webhookFailUrl` receives a body
//! signed like a legacy webhook but with no `eventType`: a `data` record with
//! a decline signal or a `message`. It is `payment.failed`, with an empty
//! vendor event type (Nexio names none) and the id `FAIL_CALLBACK:<data.id>`.
//! A body with no `eventType` and no sign of failure stays `unmapped`.
//!
//! **Other legacy events.** `CARD_SAVED` and `ECHECK_SAVED` are
//! `payment_method.saved` (`payment_method.type` `card` or `echeck`);
//! `SUBSCRIPTION_DETAILS` is `subscription.updated`; `PAYOUT` and `SPENDBACK`
//! read their codes from the nested `data` like the simplified pings. Card
//! brands reach one vocabulary (`visa`, `mastercard`, `amex`, `discover`,
//! `jcb`, `diners`; others lowercased) from the official codes and every
//! spelling webhooks use (`masterCard`, `americanExpress`). A legacy amount
//! that cannot be read exactly is left out and noted in `data.skipped`.
//!
//! **Derived event id.** Simplified bodies carry no event id and no
//! timestamp, yet Nexio retries a failed delivery twice, one minute apart,
//! with the same body, and sends a new ping for every status change of the
//! same object. `vendor_event_id` is therefore a natural key of the event
//! type, the object id and every status field, e.g. `TRANSACTION:211302211:10:10`
//! (`transactionStatus`, then `processMethod`), `PAYOUT:<payoutId>:<payoutStatus>:<transferStatus>`,
//! `SPENDBACK:<spendbackId>:<spendbackStatus>`, `DECLINE_RECOVERY:<retryId>:<orderNumber>`.
//! Onboarding pings fire on *any* change of an application (even its name), so
//! their key is `PROCESSOR_ONBOARDING:<onboardingId>:` + the SHA-256 of the
//! body re-serialized as canonical JSON (keys sorted, no whitespace): retries
//! share it whatever their formatting, any field change makes a new one.
//! Unknown simplified event types use the same hash. Legacy events use
//! `<eventType>:<data.id>`.
//!
//! **Time.** Simplified bodies say nothing about when the change happened, so
//! `occurred_at` is left empty and the pipeline uses the receipt time (at most
//! ~2 minutes late for a retried ping). Legacy bodies give `data.transactionDate`.
//!
//! **Code tables** (docs/vendors.md §3.6). `payoutStatus` and `spendbackStatus`
//! come from Nexio's official "constant payouts values" page.
//! `transactionStatus`: Nexio's official table was not captured, so the
//! names come from a **third-party** C# `TransactionStatus` enum, corroborated
//! by Nexio for 10 (`pending` = approved, not yet settled) and 20 (`settled`).
//! Codes not in a table map to a generic `*.updated` type with status name
//! `unknown`, never to an error. `transferStatus` and `processMethod` are
//! opaque (only 20 = recipient accepted / 20 = APM are documented); they take
//! part in the id and stay in `vendor_data`.
//!
//! **Secrets.** Onboarding look-ups return `apiUserCredentials` (API user name
//! and key); any such object is removed from `vendor_data` wherever it appears.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    optional, parse_json, parse_rfc3339, Lookup, LookupPath, MapOptions, Mapped, MappingError,
    Vendor,
};
use crate::auth::{SignatureScheme, Verified};
use crate::canonical::{
    Amount, Facts, Failure, Merchant, ObjectRef, PaymentMethod, Status, UNKNOWN,
};

/// The Nexio vendor module. One type reads both workflows because a merchant
/// uses exactly one of them and the body's shape (flat vs `data`) tells which.
pub struct Nexio;

/// `transactionStatus` codes (third-party C# enum, see the module doc) with
/// our canonical type for each; also read by the look-up in `crate::enrich`.
pub(crate) const TRANSACTION_STATUSES: &[(i64, &str, &str)] = &[
    (3, "authOnlyPending", "payment.authorized"),
    (9, "authorizedPending", "payment.authorized"),
    (10, "pending", "payment.succeeded"),
    (11, "authOnly", "payment.authorized"),
    (20, "settled", "payment.settled"),
    (30, "declined", "payment.failed"),
    (32, "fraudReject", "payment.failed"),
    (39, "voidPending", "payment.updated"),
    (40, "voided", "payment.voided"),
    (50, "error", "payment.failed"),
];

/// `payoutStatus` codes (official) with the canonical type for each.
pub(crate) const PAYOUT_STATUSES: &[(i64, &str, &str)] = &[
    (
        10,
        "pendingProviderAction",
        "payout.pending_provider_action",
    ),
    (
        11,
        "pendingMerchantAction",
        "payout.pending_merchant_action",
    ),
    (
        12,
        "pendingRecipientAction",
        "payout.pending_recipient_action",
    ),
    (20, "completed", "payout.completed"),
    (30, "expired", "payout.expired"),
    (40, "canceled", "payout.canceled"),
    (50, "returned", "payout.returned"),
    (90, "failed", "payout.failed"),
];

/// `spendbackStatus` codes (official) with the suffix of `spendback.<suffix>`.
pub(crate) const SPENDBACK_STATUSES: &[(i64, &str, &str)] = &[
    (10, "pending", "spendback.pending"),
    (20, "completed", "spendback.completed"),
    (30, "review", "spendback.review"),
    (40, "expired", "spendback.expired"),
    (50, "canceled", "spendback.canceled"),
    (90, "failed", "spendback.failed"),
];

/// The part of a legacy body read with its exact number literals.
#[derive(Deserialize)]
struct LegacyWire {
    data: LegacyAmount,
}

#[derive(Deserialize)]
struct LegacyAmount {
    amount: Option<Box<RawValue>>,
}

impl Vendor for Nexio {
    /// API credentials are removed from unmapped bodies too (a look-up
    /// response pasted into a webhook, say); a body that mentions them but
    /// cannot be parsed is withheld.
    fn raw_body_for_unmapped<'a>(
        &self,
        body: &'a [u8],
        _options: &MapOptions,
    ) -> Option<std::borrow::Cow<'a, [u8]>> {
        let mentions = body.windows(18).any(|w| w == b"apiUserCredentials");
        if !mentions {
            return Some(std::borrow::Cow::Borrowed(body));
        }
        let mut value: Value = serde_json::from_slice(body).ok()?;
        redact(&mut value);
        serde_json::to_vec(&value).ok().map(std::borrow::Cow::Owned)
    }

    fn signature_scheme(&self) -> Option<SignatureScheme> {
        Some(SignatureScheme::TimestampedHex {
            header: "nexio-signature",
        })
    }

    /// Thin pings are filled in from Nexio's lookup API (`lookup.rs`).
    fn lookup_paths(&self) -> &'static [LookupPath] {
        lookup::LOOKUP_PATHS
    }

    fn lookup(&self, mapped: &Mapped) -> Option<Lookup> {
        lookup::lookup_for(mapped)
    }

    fn apply_lookup(
        &self,
        mapped: &mut Mapped,
        found_for: &Lookup,
        found: &Value,
        options: &MapOptions,
    ) -> Result<(), String> {
        lookup::apply(mapped, found_for, found, options.include_personal_data())
    }

    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError> {
        let mut parsed: Value = parse_json(body.body())?;
        let root = parsed
            .as_object()
            .ok_or_else(|| MappingError::new("body is not a JSON object"))?;
        let event_type = match root.get("eventType") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => return Err(MappingError::new("eventType is not a non-empty string")),
            None if is_fail_callback(root) => {
                redact(&mut parsed);
                return map_fail_callback(parsed, body.body(), options);
            }
            None => return Err(MappingError::new("eventType is missing")),
        };
        let legacy = root.get("data").is_some_and(Value::is_object);

        redact(&mut parsed);
        let fields = parsed
            .as_object()
            .ok_or_else(|| MappingError::new("body is not a JSON object"))?;
        let mut mapped = match fields.get("data").and_then(Value::as_object) {
            Some(data) if legacy => map_legacy(&event_type, &parsed, data, body.body(), options)?,
            _ => map_simplified(&event_type, &parsed, fields)?,
        };
        mapped.facts.vendor_data = parsed;
        Ok(mapped)
    }
}

/// A simplified (flat, unsigned) ping.
fn map_simplified(
    event_type: &str,
    body: &Value,
    fields: &Map<String, Value>,
) -> Result<Mapped, MappingError> {
    let mut facts = Facts::default();
    let (canonical, key) = match event_type {
        "TRANSACTION" | "PAYOUT" | "SPENDBACK" => coded_event(event_type, fields, "", &mut facts)?,
        "DECLINE_RECOVERY" => {
            let id = required_id(fields, "retryId", "")?;
            let order = fields
                .get("orderNumber")
                .and_then(text_of)
                .unwrap_or_default();
            let key = format!("DECLINE_RECOVERY:{id}:{order}");
            facts.object = Some(object("decline_recovery", id));
            ("decline_recovery.updated".to_owned(), key)
        }
        "PROCESSOR_ONBOARDING" => {
            let id = required_id(fields, "onboardingId", "")?;
            let key = format!("PROCESSOR_ONBOARDING:{id}:{}", canonical_hash(body));
            facts.object = Some(object("merchant_application", id));
            facts.status = fields
                .get("applicationStatus")
                .and_then(text_of)
                .filter(|s| !s.is_empty())
                .map(|name| Status {
                    field: "applicationStatus".to_owned(),
                    code: None,
                    name,
                });
            ("merchant_onboarding.updated".to_owned(), key)
        }
        other => (
            UNKNOWN.to_owned(),
            format!("{other}:{}", canonical_hash(body)),
        ),
    };
    Ok(Mapped {
        event_type: canonical,
        vendor_event_type: event_type.to_owned(),
        vendor_event_id: key,
        occurred_at: None,
        facts,
    })
}

/// A legacy webhook: `{eventType, data: {...}}`.
fn map_legacy(
    event_type: &str,
    body: &Value,
    data: &Map<String, Value>,
    raw: &[u8],
    options: &MapOptions,
) -> Result<Mapped, MappingError> {
    let mut facts = Facts {
        merchant: data
            .get("merchantId")
            .and_then(text_of)
            .filter(|s| !s.is_empty())
            .map(|id| Merchant { id }),
        ..Facts::default()
    };

    // Payout and spendback records keep their numeric codes in the legacy
    // workflow too; read them like the simplified pings, from `data`.
    if matches!(event_type, "PAYOUT" | "SPENDBACK") {
        let (canonical, key) = coded_event(event_type, data, "data.", &mut facts)?;
        return Ok(Mapped {
            event_type: canonical,
            vendor_event_type: event_type.to_owned(),
            vendor_event_id: key,
            occurred_at: None,
            facts,
        });
    }

    let mut canonical = legacy_type(event_type);
    let id = data.get("id").and_then(text_of).filter(|s| !s.is_empty());
    let key = match &id {
        Some(id) => format!("{event_type}:{id}"),
        None if canonical.starts_with("payment.") || canonical.starts_with("refund.") => {
            return Err(MappingError::new(
                "data.id is missing or not a string or number",
            ))
        }
        None => format!("{event_type}:{}", canonical_hash(body)),
    };

    let mut occurred_at = None;
    if event_type.starts_with("TRANSACTION_") {
        facts.object = id.map(|id| object("transaction", id));
        occurred_at = data
            .get("transactionDate")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339);
        facts.status = data
            .get("transactionStatus")
            .and_then(|v| status_of("transactionStatus", v, TRANSACTION_STATUSES));
        let amount = legacy_amount(raw, data.get("currency"), options);
        facts.amount = optional(&mut facts, "data.amount", amount);
        facts.payment_method = card_of(data);
        // A decline arrives as the event it would have been (Nexio has no
        // TRANSACTION_DECLINED): what the payment became is in `data`.
        if DECLINABLE.contains(&canonical) {
            match outcome_of(data) {
                Some(Outcome::Declined(failure)) => {
                    canonical = "payment.failed";
                    facts.failure = Some(failure);
                }
                Some(Outcome::HeldForReview) => canonical = "payment.held",
                None => {}
            }
        }
    } else {
        match event_type {
            "CARD_SAVED" => {
                facts.object = id.map(|id| object("payment_method", id));
                facts.payment_method = card_of(data).or(Some(PaymentMethod {
                    kind: "card".to_owned(),
                    ..PaymentMethod::default()
                }));
            }
            "ECHECK_SAVED" => {
                facts.object = id.map(|id| object("payment_method", id));
                facts.payment_method = Some(PaymentMethod {
                    kind: "echeck".to_owned(),
                    ..PaymentMethod::default()
                });
            }
            "SUBSCRIPTION_DETAILS" => facts.object = id.map(|id| object("subscription", id)),
            _ => {}
        }
    }
    Ok(Mapped {
        event_type: canonical.to_owned(),
        vendor_event_type: event_type.to_owned(),
        vendor_event_id: key,
        occurred_at,
        facts,
    })
}

/// Legacy event names (Nexio's "Legacy webhooks and event types" table) to ours.
fn legacy_type(event_type: &str) -> &'static str {
    match event_type {
        "TRANSACTION_AUTHORIZED" => "payment.authorized",
        "TRANSACTION_CAPTURED" => "payment.captured",
        "TRANSACTION_PENDING" => "payment.pending",
        "TRANSACTION_SETTLED" => "payment.settled",
        "TRANSACTION_REFUNDED" => "refund.succeeded",
        "TRANSACTION_VOIDED" => "payment.voided",
        // Not in Nexio's table; kept in case it is sent.
        "TRANSACTION_DECLINED" => "payment.failed",
        "ACCOUNT_UPDATER_ACCOUNT_CLOSED" => "card_update.account_closed",
        "ACCOUNT_UPDATER_CONTACT_CARDHOLDER" => "card_update.contact_customer",
        "CARD_DATA_UPDATED" => "card_update.updated_card",
        "CARD_SAVED" | "ECHECK_SAVED" => "payment_method.saved",
        "SUBSCRIPTION_DETAILS" => "subscription.updated",
        _ => UNKNOWN,
    }
}

/// `data.amount` (+ `data.currency`) read from the raw body's literal text.
fn legacy_amount(
    raw: &[u8],
    currency: Option<&Value>,
    options: &MapOptions,
) -> Result<Option<Amount>, MappingError> {
    let wire: LegacyWire = parse_json(raw)?;
    let Some(amount) = wire.data.amount else {
        return Ok(None);
    };
    let literal = amount.get();
    let text = if literal.starts_with('"') {
        serde_json::from_str::<String>(literal)
            .map_err(|e| MappingError::new(format!("data.amount: {e}")))?
    } else if literal == "null" {
        return Ok(None);
    } else {
        literal.to_owned()
    };
    let currency = currency
        .and_then(Value::as_str)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| options.currency.clone());
    Amount::from_decimal(&text, &currency)
        .map(Some)
        .map_err(|e| MappingError::new(format!("data.amount: {e}")))
}

/// TRANSACTION, PAYOUT and SPENDBACK: an object id plus numeric status codes.
/// `prefix` names where the fields sit (`""` flat, `"data."` legacy) in errors.
fn coded_event(
    event_type: &str,
    fields: &Map<String, Value>,
    prefix: &str,
    facts: &mut Facts,
) -> Result<(String, String), MappingError> {
    let part = |name: &str| fields.get(name).and_then(text_of).unwrap_or_default();
    let (canonical, key) = match event_type {
        "TRANSACTION" => {
            let id = required_id(fields, "transactionId", prefix)?;
            let key = format!(
                "TRANSACTION:{id}:{}:{}",
                part("transactionStatus"),
                part("processMethod")
            );
            let status = fields
                .get("transactionStatus")
                .and_then(|v| status_of("transactionStatus", v, TRANSACTION_STATUSES));
            let canonical = status
                .as_ref()
                .and_then(|s| s.code)
                .and_then(|c| TRANSACTION_STATUSES.iter().find(|row| row.0 == c))
                .map_or("payment.updated", |row| row.2);
            // Only 20 = APM is documented; other process methods stay opaque.
            if fields.get("processMethod").and_then(integer_of) == Some(20) {
                facts.payment_method = Some(PaymentMethod {
                    kind: "apm".to_owned(),
                    ..PaymentMethod::default()
                });
            }
            facts.object = Some(object("transaction", id));
            facts.status = status;
            (canonical.to_owned(), key)
        }
        "PAYOUT" => {
            let id = required_id(fields, "payoutId", prefix)
                .or_else(|e| fields.get("id").and_then(text_of).ok_or(e))?;
            let key = format!(
                "PAYOUT:{id}:{}:{}",
                part("payoutStatus"),
                part("transferStatus")
            );
            let status = fields
                .get("payoutStatus")
                .and_then(|v| status_of("payoutStatus", v, PAYOUT_STATUSES));
            let canonical = family_type("payout", status.as_ref(), PAYOUT_STATUSES);
            facts.object = Some(object("payout", id));
            facts.status = status;
            (canonical, key)
        }
        _ => {
            let id = required_id(fields, "spendbackId", prefix)
                .or_else(|e| fields.get("id").and_then(text_of).ok_or(e))?;
            let key = format!("SPENDBACK:{id}:{}", part("spendbackStatus"));
            let status = fields
                .get("spendbackStatus")
                .and_then(|v| status_of("spendbackStatus", v, SPENDBACK_STATUSES));
            let canonical = family_type("spendback", status.as_ref(), SPENDBACK_STATUSES);
            facts.object = Some(object("spendback", id));
            facts.status = status;
            (canonical, key)
        }
    };
    Ok((canonical, key))
}

/// `<noun>.<snake_case status>` for a documented code, else `<noun>.updated`.
fn family_type(noun: &str, status: Option<&Status>, table: &[(i64, &str, &str)]) -> String {
    status
        .and_then(|s| s.code)
        .and_then(|c| table.iter().find(|row| row.0 == c))
        .map_or_else(|| format!("{noun}.updated"), |row| row.2.to_owned())
}

/// A status from a code (number or digit string) or a documented name.
fn status_of(field: &str, value: &Value, table: &[(i64, &str, &str)]) -> Option<Status> {
    let (code, name) = if let Some(code) = integer_of(value) {
        let name = table
            .iter()
            .find(|row| row.0 == code)
            .map_or(UNKNOWN, |row| row.1);
        (Some(code), name.to_owned())
    } else {
        let name = value.as_str().filter(|s| !s.trim().is_empty())?;
        let code = table.iter().find(|row| row.1 == name).map(|row| row.0);
        (code, name.to_owned())
    };
    Some(Status {
        field: field.to_owned(),
        code,
        name,
    })
}

fn object(kind: &str, id: String) -> ObjectRef {
    ObjectRef {
        kind: kind.to_owned(),
        id,
    }
}

/// The object id a ping is about; without it the ping cannot be identified.
fn required_id(
    fields: &Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<String, MappingError> {
    fields
        .get(name)
        .and_then(text_of)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            MappingError::new(format!(
                "{prefix}{name} is missing or not a string or number"
            ))
        })
}

/// Ids and codes: strings as they are (trimmed), numbers as their decimal text.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer code given as a JSON integer or a digit string; shared with
/// the look-up records (`crate::enrich::nexio`), which carry the same codes.
pub(crate) fn integer_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Removes every `apiUserCredentials` member, at any depth.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("apiUserCredentials");
            map.values_mut().for_each(redact);
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Lowercase hex SHA-256 of the canonical JSON form of a value.
fn canonical_hash(value: &Value) -> String {
    let text = serde_json::to_string(&sorted(value)).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The value with every object's keys inserted in sorted order, so that its
/// serialization is canonical even if `serde_json/preserve_order` is enabled.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

mod cards;
mod declines;
pub mod lookup;
#[cfg(test)]
use cards::card_brand;
pub(crate) use cards::card_of;
use declines::{is_fail_callback, map_fail_callback, outcome_of, Outcome, DECLINABLE};

#[cfg(test)]
mod tests;
