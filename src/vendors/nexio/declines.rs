//! Nexio's decline signals, read as its own plugins read them
//! (docs/vendors.md §7.1), and the per-payment fail callbacks.

use super::*;

/// Canonical types a decline or a risk review overrides: the events of a
/// payment in progress. Refunds and voids keep their type.
pub(super) const DECLINABLE: [&str; 4] = [
    "payment.authorized",
    "payment.captured",
    "payment.pending",
    "payment.settled",
];

/// `data.error` codes Nexio's own plugin names (docs/vendors.md §7.1).
const ERROR_CODES: [(&str, &str); 2] = [("435", "declined"), ("431", "declined_by_kount")];

/// What a transaction's `data` says became of the payment, when it is not
/// what the event's name suggests.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Any non-empty `data.error` code (435, 431, 436, 438, 440, ...), or a
    /// `gatewayResponse.status` / `kountResponse.status` of `declined`.
    Declined(Failure),
    /// Kount put the payment in review (`kountResponse.status` `review`):
    /// not a success, not yet a decline; the merchant decides.
    HeldForReview,
}

/// Reads Nexio's decline signals from a transaction's `data`, in the order
/// Nexio's Magento plugin checks them. `token.error` is never read: it is
/// present and empty on good captures.
pub(super) fn outcome_of(data: &Map<String, Value>) -> Option<Outcome> {
    let code = match data.get("error") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(true)) => Some(String::new()),
        _ => None,
    };
    if let Some(code) = code {
        let reason = ERROR_CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(UNKNOWN, |(_, name)| name);
        return Some(Outcome::Declined(Failure {
            field: "data.error".to_owned(),
            code: Some(code).filter(|c| !c.is_empty()),
            reason: reason.to_owned(),
        }));
    }
    let status = |block: &str| {
        data.get(block)
            .and_then(|b| b.get("status"))
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
    };
    for (block, reason) in [
        ("gatewayResponse", "declined"),
        ("kountResponse", "declined_by_kount"),
    ] {
        if status(block).as_deref() == Some("declined") {
            return Some(Outcome::Declined(Failure {
                field: format!("data.{block}.status"),
                code: None,
                reason: reason.to_owned(),
            }));
        }
    }
    (status("kountResponse").as_deref() == Some("review")).then_some(Outcome::HeldForReview)
}

/// A per-transaction `webhookFailUrl` callback: no `eventType`, a `data`
/// object that carries a decline signal or a failure message.
pub(super) fn is_fail_callback(root: &Map<String, Value>) -> bool {
    root.get("data")
        .and_then(Value::as_object)
        .is_some_and(|data| {
            matches!(outcome_of(data), Some(Outcome::Declined(_)))
                || data.get("message").is_some_and(Value::is_string)
        })
}

/// A fail callback is a failed payment. Its vendor event type is empty (Nexio
/// names none); its identity is `FAIL_CALLBACK:<data.id>`, or the body's hash.
pub(super) fn map_fail_callback(
    body: Value,
    raw: &[u8],
    options: &MapOptions,
) -> Result<Mapped, MappingError> {
    let data = body
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| MappingError::new("data is not an object"))?;
    let id = data.get("id").and_then(text_of).filter(|s| !s.is_empty());
    let key = match &id {
        Some(id) => format!("FAIL_CALLBACK:{id}"),
        None => format!("FAIL_CALLBACK:{}", canonical_hash(&body)),
    };
    let failure = match outcome_of(data) {
        Some(Outcome::Declined(failure)) => failure,
        _ => Failure {
            field: "data.message".to_owned(),
            code: None,
            reason: UNKNOWN.to_owned(),
        },
    };
    let mut facts = Facts {
        object: id.map(|id| object("transaction", id)),
        merchant: data
            .get("merchantId")
            .and_then(text_of)
            .filter(|s| !s.is_empty())
            .map(|id| Merchant { id }),
        payment_method: card_of(data),
        failure: Some(failure),
        ..Facts::default()
    };
    let amount = legacy_amount(raw, data.get("currency"), options);
    facts.amount = optional(&mut facts, "data.amount", amount);
    let occurred_at = data
        .get("transactionDate")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    facts.vendor_data = body;
    Ok(Mapped {
        event_type: "payment.failed".to_owned(),
        vendor_event_type: String::new(),
        vendor_event_id: key,
        occurred_at,
        facts,
    })
}
