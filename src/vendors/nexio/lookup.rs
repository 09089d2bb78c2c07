//! What to look up for a Nexio ping, and how a looked-up record fills the
//! event's facts.
//!
//! **Which pings.** Only the simplified workflow's thin pings (`TRANSACTION`,
//! `PAYOUT`, `SPENDBACK`, `DECLINE_RECOVERY`, `PROCESSOR_ONBOARDING`) need a
//! look-up: they carry an object id and status codes, nothing else. Legacy
//! bodies (`{eventType, data: {...}}`) already hold the record, and unknown or
//! unmapped bodies have no object id to look up.
//!
//! **What is taken from the record** (field names: docs/vendors.md §3.5; where the
//! stored docs had no example, ASSUMED as marked):
//!
//! | kind | amount | occurred_at | status (only if the ping had none) |
//! |---|---|---|---|
//! | transaction | `amount` + `currency` (legacy `data` example; falls back to `data.amount`/`data.currency`) | `transactionDate` | `transactionStatus` |
//! | payout | `amount` + `currency` (ASSUMED, like spendbacks) | `payoutDate` (ASSUMED), `createdAt` | `payoutStatus` |
//! | spendback | `amount` + `currency` | `spendbackDate`, `createdAt` | `spendbackStatus` |
//! | decline recovery | `originalAmount` + `currency` (ASSUMED) or `originalPaymentRequest.data.currency` (ASSUMED) | `updatedAt`, `createdAt` | `recoveryStatus` |
//! | onboarding | — | — (receipt time) | `status` (free text) |
//!
//! plus, for every kind, `merchantId` → `merchant`, and for transactions the
//! card: `cardType` (official codes 10 Visa, 20 MasterCard, 30 Discover,
//! 40 Amex, 50 JCB; read at the top level or in `card`, location ASSUMED) and
//! the last four digits (`card.lastFour`, ASSUMED, or `token.lastFour`).
//!
//! **The ping's status wins.** The ping is the news ("this object just became
//! 20"); the record may still show the previous state, because Nexio's API
//! lags up to a minute and because answers are cached. So a status in the ping
//! is never overwritten; the record's status only fills a gap. Likewise an
//! `occurred_at`, merchant or payment method the mapping already set is kept.
//!
//! **Secrets and personal data.** Onboarding records contain
//! `apiUserCredentials` (an API user name *and key*); recovery records embed
//! the original payment request. Before anything of the record is read or
//! kept, every `apiUserCredentials`, `apiKey`, `password`, `secret`,
//! `cardToken`, `encryptedNumber`, `securityCode` member and every string
//! `token` is removed at any depth, always. Personal data (`customer`,
//! `cardHolder`, `cardHolderName`, `signer`, `phoneNumber`, `email`,
//! `firstName`, `lastName`) is removed too unless the caller opts in with
//! [`apply_nexio_with`]. What is left goes to `vendor_data.lookup`.
//!
//! Amounts are read from the literal text the look-up service's exact JSON
//! parser preserved; a record whose amount was parsed as a float is refused.
//!
//! **Where.** The API's base URLs are [`SANDBOX_BASE_URL`] and
//! [`PRODUCTION_BASE_URL`]; the path of each kind is [`LOOKUP_PATHS`], which
//! a source may override under `[source.enrich.paths]`.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::canonical::{Amount, Mapped, Merchant, Status, UNKNOWN};
use crate::vendors::{Lookup, LookupPath};

/// The key under `vendor_data` that holds the (redacted) looked-up record.
pub const LOOKUP_KEY: &str = "lookup";

/// Nexio's sandbox API (docs/vendors.md §3.5, [NEX-BASE]).
pub const SANDBOX_BASE_URL: &str = "https://api.nexiopaysandbox.com";

/// Nexio's production API (docs/vendors.md §3.5, [NEX-BASE]); onboarding
/// look-ups work only here.
pub const PRODUCTION_BASE_URL: &str = "https://api.nexiopay.com";

/// The by-id look-ups, one per kind, with their default path templates.
///
/// Defaults are docs/vendors.md §3.5. Only the list endpoints are confirmed
/// there; the by-id transaction, payout, spendback and recovery paths are
/// ASSUMED from them, and the onboarding path is UNKNOWN (Nexio documents the
/// endpoint, "View application by onboarding ID", but not its path), so its
/// default is a guess that operators must check against Nexio.
pub(crate) const LOOKUP_PATHS: &[LookupPath] = &[
    LookupPath {
        kind: "transaction",
        default_path: "/transaction/v3/{id}",
        what: "a transaction look-up (`TRANSACTION` pings' `transactionId`)",
    },
    LookupPath {
        kind: "payout",
        default_path: "/payout/v3/{id}",
        what: "a payout look-up (`PAYOUT` pings' `payoutId`)",
    },
    LookupPath {
        kind: "spendback",
        default_path: "/payout/v3/spendback/{id}",
        what: "a spendback look-up (`SPENDBACK` pings' `spendbackId`)",
    },
    LookupPath {
        kind: "recovery",
        default_path: "/recovery/v3/{id}",
        what: "a decline-recovery look-up (`DECLINE_RECOVERY` pings' `retryId`)",
    },
    LookupPath {
        kind: "onboarding",
        default_path: "/partner/v3/onboarding/{id}",
        what: "an onboarding-application look-up (`PROCESSOR_ONBOARDING` pings; production API only; path UNKNOWN, check it)",
    },
];

/// What a look-up is about; each kind has its own API path and fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupKind {
    /// A `TRANSACTION` ping's `transactionId`.
    Transaction,
    /// A `PAYOUT` ping's `payoutId`.
    Payout,
    /// A `SPENDBACK` ping's `spendbackId`.
    Spendback,
    /// A `DECLINE_RECOVERY` ping's `retryId`.
    DeclineRecovery,
    /// A `PROCESSOR_ONBOARDING` ping's `onboardingId` (production API only).
    Onboarding,
}

impl LookupKind {
    /// The kind's name in [`LOOKUP_PATHS`], in [`Lookup::kind`] and in the config.
    fn name(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
            Self::Payout => "payout",
            Self::Spendback => "spendback",
            Self::DeclineRecovery => "recovery",
            Self::Onboarding => "onboarding",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Transaction,
            Self::Payout,
            Self::Spendback,
            Self::DeclineRecovery,
            Self::Onboarding,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }
}

// The transaction, payout and spendback code tables are the mapping's own,
// so a ping and a looked-up record can never disagree on a code's name.
use super::{card_of, integer_of, PAYOUT_STATUSES, SPENDBACK_STATUSES, TRANSACTION_STATUSES};

/// `recoveryStatus`: only 30 ("retry attempt scheduled") has a documented
/// meaning; Nexio's own name for it was not captured, so this is ours.
const RECOVERY_STATUSES: &[(i64, &str, &str)] =
    &[(30, "retryAttemptScheduled", "decline_recovery.updated")];

/// Removed at any depth, whatever the caller allows: credentials.
const SECRET_KEYS: &[&str] = &[
    "apiUserCredentials",
    "apiKey",
    "password",
    "secret",
    "cardToken",
    "encryptedNumber",
    "securityCode",
];

/// Removed at any depth unless personal data is allowed.
const PERSONAL_KEYS: &[&str] = &[
    "customer",
    "cardHolder",
    "cardHolderName",
    "signer",
    "phoneNumber",
    "email",
    "firstName",
    "lastName",
];

/// The look-up a mapped Nexio event needs, or `None` when it needs none:
/// legacy bodies (they carry the record), unmapped bodies, unknown event
/// types, and pings without an object id.
pub(crate) fn lookup_for(mapped: &Mapped) -> Option<Lookup> {
    if mapped.facts.unmapped.is_some() {
        return None;
    }
    if mapped
        .facts
        .vendor_data
        .get("data")
        .is_some_and(Value::is_object)
    {
        return None;
    }
    let kind = match mapped.vendor_event_type.as_str() {
        "TRANSACTION" => LookupKind::Transaction,
        "PAYOUT" => LookupKind::Payout,
        "SPENDBACK" => LookupKind::Spendback,
        "DECLINE_RECOVERY" => LookupKind::DeclineRecovery,
        "PROCESSOR_ONBOARDING" => LookupKind::Onboarding,
        _ => return None,
    };
    let id = mapped.facts.object.as_ref()?.id.trim();
    (!id.is_empty()).then(|| Lookup {
        kind: kind.name().to_owned(),
        id: id.to_owned(),
    })
}

/// Merges a looked-up Nexio record into the event's facts; see the module
/// doc for what is read and what is removed. The payer's details stay in
/// `vendor_data.lookup` only with `include_personal_data`; credentials are
/// removed either way.
///
/// On `Err` the event is left exactly as it was, so the caller can still
/// publish it with the reason as an enrichment failure.
pub(crate) fn apply(
    mapped: &mut Mapped,
    lookup: &Lookup,
    found: &Value,
    include_personal_data: bool,
) -> Result<(), String> {
    let kind = LookupKind::from_name(&lookup.kind)
        .ok_or_else(|| format!("Nexio has no `{}` look-up", lookup.kind))?;
    let mut record = found.clone();
    redact(&mut record, include_personal_data);
    let fields = record
        .as_object()
        .ok_or_else(|| format!("the looked-up {} is not a JSON object", kind.name()))?;

    // Everything is computed first and committed only if all of it is valid.
    let amount = amount_of(kind, fields)?;
    let payment_method = if kind == LookupKind::Transaction {
        card_of(fields)
    } else {
        None
    };
    let merchant = fields
        .get("merchantId")
        .and_then(text_of)
        .filter(|s| !s.is_empty())
        .map(|id| Merchant { id });
    let occurred_at = date_fields(kind).iter().find_map(|name| {
        fields
            .get(*name)
            .and_then(Value::as_str)
            .and_then(parse_time)
    });
    let status = status_of(kind, fields);

    let facts = &mut mapped.facts;
    if amount.is_some() {
        facts.amount = amount;
    }
    if let Some(card) = payment_method {
        match &mut facts.payment_method {
            None => facts.payment_method = Some(card),
            Some(existing) if existing.kind == card.kind => {
                existing.brand = existing.brand.take().or(card.brand);
                existing.last4 = existing.last4.take().or(card.last4);
            }
            // The ping said APM (processMethod 20); card fields would contradict it.
            Some(_) => {}
        }
    }
    if facts.merchant.is_none() {
        facts.merchant = merchant;
    }
    if mapped.occurred_at.is_none() {
        mapped.occurred_at = occurred_at;
    }
    if facts.status.is_none() {
        if let Some((status, canonical)) = status {
            if let Some(canonical) = canonical {
                mapped.event_type = canonical.to_owned();
            }
            facts.status = Some(status);
        }
    }
    match &mut facts.vendor_data {
        Value::Object(ping) => {
            ping.insert(LOOKUP_KEY.to_owned(), record);
        }
        other => {
            let mut wrapped = Map::new();
            wrapped.insert(LOOKUP_KEY.to_owned(), record);
            *other = Value::Object(wrapped);
        }
    }
    Ok(())
}

/// Removes credentials always and personal data unless allowed, at any depth.
fn redact(value: &mut Value, personal: bool) {
    match value {
        Value::Object(map) => {
            map.retain(|key, v| {
                !(SECRET_KEYS.contains(&key.as_str())
                    || (key == "token" && v.is_string())
                    || (!personal && PERSONAL_KEYS.contains(&key.as_str())))
            });
            map.values_mut().for_each(|v| redact(v, personal));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, personal)),
        _ => {}
    }
}

/// The record's amount, exact, when it has one and a currency to go with it.
fn amount_of(kind: LookupKind, fields: &Map<String, Value>) -> Result<Option<Amount>, String> {
    let nested = |outer: &str, inner: &str| fields.get(outer).and_then(|o| o.get(inner)).cloned();
    let (name, value, currency) = match kind {
        LookupKind::Transaction => {
            let value = fields
                .get("amount")
                .cloned()
                .or_else(|| nested("data", "amount"));
            let currency = fields
                .get("currency")
                .cloned()
                .or_else(|| nested("data", "currency"));
            ("amount", value, currency)
        }
        LookupKind::Payout | LookupKind::Spendback => (
            "amount",
            fields.get("amount").cloned(),
            fields.get("currency").cloned(),
        ),
        LookupKind::DeclineRecovery => {
            let currency = fields.get("currency").cloned().or_else(|| {
                fields
                    .get("originalPaymentRequest")
                    .and_then(|r| r.get("data"))
                    .and_then(|d| d.get("currency"))
                    .cloned()
            });
            (
                "originalAmount",
                fields.get("originalAmount").cloned(),
                currency,
            )
        }
        LookupKind::Onboarding => return Ok(None),
    };
    let Some(text) = value
        .as_ref()
        .map(|v| exact_text(name, v))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    let Some(currency) = currency
        .as_ref()
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase)
    else {
        // Without a currency the sum means nothing; leave the amount out.
        return Ok(None);
    };
    Amount::from_decimal(&text, &currency)
        .map(Some)
        .map_err(|e| format!("{name}: {e}"))
}

/// The exact text of an amount: a string (as the look-up service's exact
/// parser keeps decimals), or an integer. A float-backed number is refused: its
/// literal is already lost.
fn exact_text(name: &str, value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Value::Number(n) => Err(format!(
            "{name}: `{n}` was parsed as a floating-point number; parse look-up bodies with enrich::json::parse_exact"
        )),
        other => Err(format!("{name}: `{other}` is not a number")),
    }
}

/// Fields that say when the object's event happened, best first.
fn date_fields(kind: LookupKind) -> &'static [&'static str] {
    match kind {
        LookupKind::Transaction => &["transactionDate"],
        LookupKind::Payout => &["payoutDate", "createdAt"],
        LookupKind::Spendback => &["spendbackDate", "createdAt"],
        LookupKind::DeclineRecovery => &["updatedAt", "createdAt"],
        LookupKind::Onboarding => &[],
    }
}

/// The record's status, with the canonical type it implies (if any).
fn status_of(
    kind: LookupKind,
    fields: &Map<String, Value>,
) -> Option<(Status, Option<&'static str>)> {
    let (field, table): (&str, &[(i64, &str, &'static str)]) = match kind {
        LookupKind::Transaction => ("transactionStatus", TRANSACTION_STATUSES),
        LookupKind::Payout => ("payoutStatus", PAYOUT_STATUSES),
        LookupKind::Spendback => ("spendbackStatus", SPENDBACK_STATUSES),
        LookupKind::DeclineRecovery => ("recoveryStatus", RECOVERY_STATUSES),
        LookupKind::Onboarding => {
            let name = fields
                .get("status")
                .and_then(text_of)
                .filter(|s| !s.is_empty())?;
            let status = Status {
                field: "status".to_owned(),
                code: None,
                name,
            };
            return Some((status, None));
        }
    };
    let value = fields.get(field)?;
    if let Some(code) = integer_of(value) {
        let row = table.iter().find(|row| row.0 == code);
        let status = Status {
            field: field.to_owned(),
            code: Some(code),
            name: row.map_or(UNKNOWN, |row| row.1).to_owned(),
        };
        return Some((status, row.map(|row| row.2)));
    }
    // Legacy-style names (`"pending"`) are kept as they are.
    let name = value.as_str().map(str::trim).filter(|s| !s.is_empty())?;
    let row = table.iter().find(|row| row.1 == name);
    let status = Status {
        field: field.to_owned(),
        code: row.map(|row| row.0),
        name: name.to_owned(),
    };
    Some((status, row.map(|row| row.2)))
}

/// Ids and codes: strings trimmed, integers as their decimal text.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{Facts, ObjectRef};
    use serde_json::json;

    fn at(kind: &str, id: &str) -> Lookup {
        Lookup {
            kind: kind.to_owned(),
            id: id.to_owned(),
        }
    }

    fn apply_nexio(m: &mut Mapped, kind: &str, found: &Value) -> Result<(), String> {
        apply(m, &at(kind, "1"), found, false)
    }

    fn ping(event_type: &str, kind: &str, id: &str) -> Mapped {
        Mapped {
            event_type: "payment.updated".into(),
            vendor_event_type: event_type.into(),
            vendor_event_id: format!("{event_type}:{id}"),
            occurred_at: None,
            facts: Facts {
                object: Some(ObjectRef {
                    kind: kind.into(),
                    id: id.into(),
                }),
                vendor_data: json!({"eventType": event_type}),
                ..Facts::default()
            },
        }
    }

    #[test]
    fn only_thin_pings_with_an_id_need_a_lookup() {
        let l = lookup_for(&ping("TRANSACTION", "transaction", "211302211")).unwrap();
        assert_eq!(
            (l.kind.as_str(), l.id.as_str()),
            ("transaction", "211302211")
        );
        for (t, k) in [
            ("PAYOUT", "payout"),
            ("SPENDBACK", "spendback"),
            ("DECLINE_RECOVERY", "recovery"),
            ("PROCESSOR_ONBOARDING", "onboarding"),
        ] {
            assert_eq!(lookup_for(&ping(t, "x", "1")).unwrap().kind, k);
        }
        assert!(lookup_for(&ping("CHARGEBACK", "x", "1")).is_none());
        let mut legacy = ping("PAYOUT", "payout", "7");
        legacy.facts.vendor_data = json!({"eventType": "PAYOUT", "data": {"id": 7}});
        assert!(lookup_for(&legacy).is_none());
        let mut no_id = ping("TRANSACTION", "transaction", "1");
        no_id.facts.object = None;
        assert!(lookup_for(&no_id).is_none());
    }

    #[test]
    fn every_kind_has_a_path_and_unknown_kinds_are_refused() {
        for path in LOOKUP_PATHS {
            assert!(LookupKind::from_name(path.kind).is_some(), "{}", path.kind);
            assert!(path.default_path.starts_with('/') && path.default_path.contains("{id}"));
        }
        let mut m = ping("TRANSACTION", "transaction", "1");
        let err = apply(&mut m, &at("chargeback", "1"), &json!({}), false).unwrap_err();
        assert!(err.contains("`chargeback`"), "{err}");
    }

    #[test]
    fn the_pings_status_wins_over_a_lagging_record() {
        let mut m = ping("TRANSACTION", "transaction", "1");
        m.event_type = "payment.settled".into();
        m.facts.status = Some(Status {
            field: "transactionStatus".into(),
            code: Some(20),
            name: "settled".into(),
        });
        let record = json!({"id": 1, "transactionStatus": 10, "amount": "2.00", "currency": "USD"});
        apply_nexio(&mut m, "transaction", &record).unwrap();
        assert_eq!(m.facts.status.unwrap().code, Some(20));
        assert_eq!(m.event_type, "payment.settled");
        assert_eq!(m.facts.amount.unwrap().minor, 200);

        // With no status in the ping, the record's fills the gap.
        let mut m = ping("PAYOUT", "payout", "2437652");
        m.event_type = "payout.updated".into();
        let record = json!({"id": 2437652, "payoutStatus": 20, "amount": 12, "currency": "usd"});
        apply_nexio(&mut m, "payout", &record).unwrap();
        assert_eq!(m.event_type, "payout.completed");
        let amount = m.facts.amount.unwrap();
        assert_eq!(
            (amount.value.as_str(), amount.currency.as_str()),
            ("12.00", "USD")
        );
    }

    #[test]
    fn float_amounts_and_bad_amounts_are_errors_and_leave_the_event_untouched() {
        let mut m = ping("TRANSACTION", "transaction", "1");
        let before = format!("{m:?}");
        let err = apply_nexio(
            &mut m,
            "transaction",
            &json!({"amount": 1.15, "currency": "USD", "merchantId": "1"}),
        )
        .unwrap_err();
        assert!(err.contains("parse_exact"), "{err}");
        let err = apply_nexio(
            &mut m,
            "transaction",
            &json!({"amount": "1.155", "currency": "USD", "merchantId": "1"}),
        )
        .unwrap_err();
        assert!(err.starts_with("amount:"), "{err}");
        assert!(apply_nexio(&mut m, "transaction", &json!([1])).is_err());
        assert_eq!(format!("{m:?}"), before);
        // No currency: no amount, no error.
        apply_nexio(&mut m, "transaction", &json!({"amount": "1.15"})).unwrap();
        assert!(m.facts.amount.is_none());
    }

    #[test]
    fn credentials_always_go_and_personal_data_goes_unless_allowed() {
        let record = json!({
            "id": 43118, "merchantId": "100039", "originalAmount": "3.10",
            "cardToken": "tok-secret", "recoveryStatus": 30,
            "originalPaymentRequest": {"data": {"currency": "USD", "customer": {"email": "p@example.com"}},
                                       "card": {"encryptedNumber": "enc", "cardHolder": "Pat Payer"},
                                       "tokenex": {"token": "tok-2"}}
        });
        let mut m = ping("DECLINE_RECOVERY", "decline_recovery", "43118");
        apply_nexio(&mut m, "recovery", &record).unwrap();
        let text = m.facts.vendor_data.to_string();
        for leaked in ["tok-secret", "tok-2", "enc\"", "p@example.com", "Pat Payer"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
        assert_eq!(m.facts.amount.as_ref().unwrap().minor, 310);
        let status = m.facts.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.name.as_str()),
            (Some(30), "retryAttemptScheduled")
        );

        let mut m = ping("DECLINE_RECOVERY", "decline_recovery", "43118");
        apply(&mut m, &at("recovery", "43118"), &record, true).unwrap();
        let text = m.facts.vendor_data.to_string();
        assert!(
            text.contains("Pat Payer") && !text.contains("tok-secret"),
            "{text}"
        );
    }
}
