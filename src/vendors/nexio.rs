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

use super::{parse_json, parse_rfc3339, MapOptions, Mapped, MappingError, Vendor};
use crate::auth::{SignatureScheme, Verified};
use crate::canonical::{Amount, Facts, Merchant, ObjectRef, PaymentMethod, Status, UNKNOWN};

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

    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError> {
        let mut parsed: Value = parse_json(body.body())?;
        let root = parsed
            .as_object()
            .ok_or_else(|| MappingError::new("body is not a JSON object"))?;
        let event_type = match root.get("eventType") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => return Err(MappingError::new("eventType is not a non-empty string")),
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

    let canonical = legacy_type(event_type);
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
        facts.amount = legacy_amount(raw, data.get("currency"), options)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(body: &str) -> Result<Mapped, MappingError> {
        Nexio.map(
            &Verified::assume_verified_for_tests(body.as_bytes().to_vec()),
            &MapOptions::default(),
        )
    }

    #[test]
    fn retries_share_an_id_whatever_their_formatting_and_new_statuses_do_not() {
        let a = map(r#"{"eventType":"TRANSACTION","transactionStatus":10,"processMethod":10,"transactionId":211302211}"#)
            .unwrap();
        let b = map("{\n  \"transactionId\": 211302211,\n  \"processMethod\": 10,\n  \"eventType\": \"TRANSACTION\",\n  \"transactionStatus\": 10\n}")
            .unwrap();
        let settled = map(r#"{"eventType":"TRANSACTION","transactionStatus":20,"processMethod":10,"transactionId":211302211}"#)
            .unwrap();
        assert_eq!(a.vendor_event_id, "TRANSACTION:211302211:10:10");
        assert_eq!(a.vendor_event_id, b.vendor_event_id);
        assert_ne!(a.vendor_event_id, settled.vendor_event_id);

        let onboarding = r#"{"eventType":"PROCESSOR_ONBOARDING","credsReady":false,"pendingItemsUpdatedAt":null,"applicationStatus":"App Created","onboardingId":"16c3d4c3673f3b5193e56a651df0d3e4","repCode":"123Z"}"#;
        let reordered = "{ \"repCode\": \"123Z\", \"onboardingId\": \"16c3d4c3673f3b5193e56a651df0d3e4\",\n \"applicationStatus\": \"App Created\", \"pendingItemsUpdatedAt\": null, \"credsReady\": false, \"eventType\": \"PROCESSOR_ONBOARDING\" }";
        let renamed = onboarding.replace("123Z", "124Z");
        let first = map(onboarding).unwrap().vendor_event_id;
        assert!(first.starts_with("PROCESSOR_ONBOARDING:16c3d4c3673f3b5193e56a651df0d3e4:"));
        assert_eq!(
            first.len(),
            "PROCESSOR_ONBOARDING:16c3d4c3673f3b5193e56a651df0d3e4:".len() + 64
        );
        assert_eq!(first, map(reordered).unwrap().vendor_event_id);
        assert_ne!(first, map(&renamed).unwrap().vendor_event_id);
    }

    #[test]
    fn the_legacy_vector_fixture_verifies_with_this_vendors_scheme() {
        // Self-computed vector (docs/vendors.md §5), not a vendor-published one.
        let body = include_bytes!("../../tests/fixtures/nexio/legacy-signed-vector.json");
        assert_eq!(body.len(), 84);
        let verifier = crate::auth::HmacVerifier::new(
            Nexio.signature_scheme().unwrap(),
            vec![crate::secret::Secret::new("example-nexio-webhook-secret")],
            std::time::Duration::from_secs(300),
        );
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "nexio-signature",
            "t=1554146049,v1=0bbe4ef0873c090e1e7b377a58eb9a7f4a0e47dfcb4529306b853e5011a7210f"
                .parse()
                .unwrap(),
        );
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_554_146_049);
        assert!(verifier.verify(&headers, body, now).is_ok());
        assert_eq!(
            map(std::str::from_utf8(body).unwrap()).unwrap().event_type,
            "payment.authorized"
        );
    }

    #[test]
    fn api_user_credentials_never_reach_vendor_data() {
        let body = r#"{"eventType":"PROCESSOR_ONBOARDING","onboardingId":"abc","applicationStatus":"Underwriting Signed",
            "apiUserCredentials":{"apiKey":"secret-key","userName":"api@example.com"},
            "nested":{"apiUserCredentials":{"apiKey":"k2"},"list":[{"apiUserCredentials":{"apiKey":"k3"},"keep":1}]}}"#;
        let mapped = map(body).unwrap();
        let text = mapped.facts.vendor_data.to_string();
        assert!(!text.contains("apiUserCredentials"), "{text}");
        assert!(
            !text.contains("secret-key") && !text.contains("k2") && !text.contains("k3"),
            "{text}"
        );
        assert_eq!(mapped.facts.vendor_data["nested"]["list"][0]["keep"], 1);
        assert_eq!(
            mapped.facts.vendor_data["applicationStatus"],
            "Underwriting Signed"
        );
    }

    #[test]
    fn transaction_codes_map_to_the_documented_families() {
        let cases = [
            (3, "payment.authorized", "authOnlyPending"),
            (9, "payment.authorized", "authorizedPending"),
            (10, "payment.succeeded", "pending"),
            (11, "payment.authorized", "authOnly"),
            (20, "payment.settled", "settled"),
            (30, "payment.failed", "declined"),
            (32, "payment.failed", "fraudReject"),
            (39, "payment.updated", "voidPending"),
            (40, "payment.voided", "voided"),
            (50, "payment.failed", "error"),
            (77, "payment.updated", "unknown"),
        ];
        for (code, canonical, name) in cases {
            let m = map(&format!(
                r#"{{"eventType":"TRANSACTION","transactionStatus":{code},"processMethod":10,"transactionId":"t-1"}}"#
            ))
            .unwrap();
            assert_eq!(m.event_type, canonical, "{code}");
            let status = m.facts.status.unwrap();
            assert_eq!((status.code, status.name.as_str()), (Some(code), name));
        }
    }

    #[test]
    fn payout_and_spendback_codes_become_snake_case_types() {
        let m =
            map(r#"{"eventType":"PAYOUT","payoutStatus":12,"transferStatus":null,"payoutId":"7"}"#)
                .unwrap();
        assert_eq!(m.event_type, "payout.pending_recipient_action");
        assert_eq!(m.vendor_event_id, "PAYOUT:7:12:");
        let m = map(r#"{"eventType":"PAYOUT","payoutStatus":61,"payoutId":7}"#).unwrap();
        assert_eq!(m.event_type, "payout.updated");
        assert_eq!(m.facts.status.unwrap().name, "unknown");
        let m = map(r#"{"eventType":"SPENDBACK","spendbackStatus":30,"spendbackId":5}"#).unwrap();
        assert_eq!(m.event_type, "spendback.review");
        let m = map(r#"{"eventType":"SPENDBACK","spendbackStatus":31,"spendbackId":5}"#).unwrap();
        assert_eq!(m.event_type, "spendback.updated");
    }

    #[test]
    fn legacy_amounts_are_read_from_their_literal_text() {
        let m = map(r#"{"eventType":"TRANSACTION_REFUNDED","data":{"id":"x","amount":0.29,"currency":"usd","transactionDate":"2019-12-23T20:50:23.060Z"}}"#)
            .unwrap();
        let amount = m.facts.amount.unwrap();
        assert_eq!(
            (
                amount.value.as_str(),
                amount.minor,
                amount.currency.as_str()
            ),
            ("0.29", 29, "USD")
        );
        assert_eq!(m.event_type, "refund.succeeded");
        assert_eq!(m.vendor_event_id, "TRANSACTION_REFUNDED:x");
        assert!(m.occurred_at.is_some());
        assert!(
            map(r#"{"eventType":"TRANSACTION_SETTLED","data":{"id":"x","amount":1.005}}"#).is_err()
        );
        assert!(map(r#"{"eventType":"TRANSACTION_SETTLED","data":{"amount":1}}"#).is_err());
    }

    #[test]
    fn bodies_without_an_event_type_are_errors_and_unknown_types_are_not() {
        assert!(map(r#"{"transactionId":1}"#).is_err());
        assert!(map(r#"{"eventType":42}"#).is_err());
        assert!(map("[1]").is_err());
        assert!(map("not json").is_err());
        assert!(map(r#"{"eventType":"TRANSACTION"}"#).is_err());
        let m = map(r#"{"eventType":"CHARGEBACK","id":1}"#).unwrap();
        assert_eq!(m.event_type, "unknown");
        assert!(m.vendor_event_id.starts_with("CHARGEBACK:"));
    }
}
