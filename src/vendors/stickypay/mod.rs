//! Sticky (sticky.to) activity webhooks: NFC "sticky" taps and payments.
//!
//! **Only `v2` is read.** Sticky's doc says "Use keys under the v2 key only.
//! Other keys are deprecated and are being removed." So the mapping reads
//! `v2.*` and nothing else, and `vendor_data` is the `v2` object alone: the
//! deprecated top-level keys are dropped, so consumers cannot grow a
//! dependency on fields that are about to vanish. A body without an object
//! `v2`, or without a string `v2.event.type` / `v2.event.id`, is a
//! [`MappingError`] (published as `unmapped`).
//!
//! **Identity and types.** `v2.event.id` is documented as a unique UUID per
//! event and is the vendor event id. `v2.event.type`: `SESSION_CART_PAY` →
//! `payment.succeeded`, `SESSION_CART_PAY_FAIL` → `payment.failed` (Sticky's
//! own connectors hook it as the failed-payment event, docs/vendors.md §7.2),
//! `SESSION_CART_REFUND` → `refund.succeeded`, `SESSION_READ` (a sticker
//! tap) → `session.tapped`, `CHECK_IN` → `session.checked_in`; Sticky
//! delivers "every event type" (`CONNECTION_GOOD`, `CONNECTION_BAD`,
//! `MESSAGE`, `TO_DO`, `LD_V2`, ...) and the full list is not published, so
//! anything else is `unknown` with its vendor type, never an error.
//!
//! **No signature, no retry.** Sticky cannot sign or authenticate a delivery:
//! sources use a secret token in the URL (config, not this module). Sticky's
//! older doc says webhooks "fail silently and there is no retry mechanism", so
//! a delivery we lose is lost for good (only polling `GET /v1/payments` can
//! recover it). That is why the gateway must persist (or publish with a
//! confirm) *before* it answers 2xx, and why this mapping never rejects a
//! well-formed event for being unfamiliar.
//!
//! **Units.** `total`, `refundedTotal`, `refundAmount`, `tip` and `discount`
//! are integers in minor units ("$1.00 USD = 100"); a figure that is not an
//! integer is left out and noted in `data.skipped`, never rounded, and never
//! a reason to publish the event as `unmapped`. The currency is
//! `payment.currency`, else `event.customData.currency`, else the source's
//! configured currency; a currency that is not an ISO 4217 code leaves every
//! amount out (noted). `sessionPaidAt`, `sessionFailedAt` and `refundedAt`
//! are unix seconds.
//!
//! **Refunds.** `payment.refundedTotal` is the payment's running total, so
//! after a second partial refund it is not the amount of this refund. The
//! refund's own amount is `v2.event.customData.refundAmount` when present (as
//! Sticky's current Zapier connector reads it, §7.2); without it, the running
//! total above zero, else `total`. The running total is published separately
//! as `refunded_total`. The refund's time is the event's own creation time,
//! `v2.event.createdAt` (key name ASSUMED: the connector reads the event's
//! creation, the stored material does not name the key), else
//! `payment.refundedAt`.
//!
//! **Failed payments.** `SESSION_CART_PAY_FAIL` carries a `payment` whose
//! `total` is the failed amount and `sessionFailedAt` its time; the object id
//! is `payment.id`, else `payment.userPaymentId` (what the connectors read).
//!
//! **Secrets and personal data.** Sticky warns that payloads "will almost
//! certainly contain sensitive data like PII, payment provider credentials".
//! - Any key named like a private key (`userPrivateKey`, `privateKey`, ...) or
//!   another credential (`secret`, `password`, `apiKey`, `accessToken`,
//!   `credentials`) is removed at every depth, whatever its value, and any
//!   string that embeds such a removed value is replaced by `[redacted]`.
//!   This holds even when personal data is enabled: a Sticky private key
//!   grants API access to the merchant's account.
//! - Personal data is published only when the source sets
//!   `include_personal_data` (default off). When off, the payer's `name`,
//!   `companyName`, `email`, `phone` and `address` are removed from every
//!   `payment` object, the free-form per-user stores `session.crossUserSector`
//!   and `session.userSector` are removed whole (their keys are chosen by the
//!   payer's apps, so we cannot list the personal ones), and unambiguous
//!   contact keys (`email`, `phone`, `address`, `firstName`, ...) are removed
//!   at any depth. When on, those stay in `vendor_data` and `customer` is
//!   filled from `payment`, falling back to the two user sectors.
//!
//! **Merchant.** `merchant.id` is `v2.flow.userId`, falling back to
//! `payment.userId` (external payments arrive with no `flow`, and
//! `payment.userId` always names the merchant account, §7.2), then
//! `sticky.userId`. Bodies of every date map alike: keys added or removed
//! over time (`giftAid`, `distributionMode`, `marketing`, `totalCpa`,
//! `cpaPeriod`) are neither required nor refused. In Sticky a "user" is an account
//! holder (the business); payers are "federated users" (`lastFederatedUserId`,
//! `federatedUserIds`). The flow is what sets the gateway and the merchant's
//! percentage, i.e. who gets paid, so its owner is the merchant account; a
//! sticker can be owned by whoever printed or resold it.
//!
//! **Payment method.** Not published: Sticky names only its *gateway*
//! (`GATEWAY_NOOP`, `GATEWAY_STICKYPAY`, ...), not how the payer paid (no card
//! brand or last four). The gateway stays in `vendor_data.payment.gateway`.

use serde_json::{Map, Value};

use super::{
    from_unix_seconds, optional, parse_json, parse_rfc3339, MapOptions, Mapped, MappingError,
    Vendor,
};
use crate::auth::Verified;
use crate::canonical::{Amount, Customer, Facts, Merchant, ObjectRef, UNKNOWN};

/// The Sticky vendor module. It has no signature scheme because Sticky cannot
/// sign; a source authenticates it with a secret URL token instead.
pub struct Stickypay;

impl Vendor for Stickypay {
    fn raw_body_for_unmapped<'a>(
        &self,
        body: &'a [u8],
        options: &MapOptions,
    ) -> Option<std::borrow::Cow<'a, [u8]>> {
        redacted_raw_body(body, options).map(std::borrow::Cow::Owned)
    }

    fn map(&self, body: &Verified, options: &MapOptions) -> Result<Mapped, MappingError> {
        let root: Value = parse_json(body.body())?;
        let mut v2 = match root {
            Value::Object(mut top) => top.remove("v2"),
            _ => None,
        }
        .filter(Value::is_object)
        .ok_or_else(|| {
            MappingError::new("body has no `v2` object (Sticky: use keys under v2 only)")
        })?;

        let vendor_event_type = required_text(&v2, "/event/type")?;
        let vendor_event_id = required_text(&v2, "/event/id")?;
        let kind = Kind::of(&vendor_event_type);

        let payment = v2.get("payment").filter(|p| p.is_object());
        let custom = v2.pointer("/event/customData").filter(|c| c.is_object());
        let mut facts = Facts::default();
        Money::read(payment, custom, kind, options, &mut facts);

        let payment_time = |name: &str| payment.and_then(|p| p.get(name)).and_then(time_of);
        let occurred_at = match kind {
            Kind::Pay => payment_time("sessionPaidAt"),
            Kind::PayFail => payment_time("sessionFailedAt"),
            Kind::Refund => v2
                .pointer("/event/createdAt")
                .and_then(time_of)
                .or_else(|| payment_time("refundedAt")),
            _ => None,
        };

        let object = match payment
            .and_then(|p| text(p.get("id")).or_else(|| text(p.get("userPaymentId"))))
        {
            Some(id) => Some(ObjectRef {
                kind: "payment".to_owned(),
                id,
            }),
            None => text(v2.pointer("/session/id")).map(|id| ObjectRef {
                kind: "session".to_owned(),
                id,
            }),
        };

        let merchant = ["/flow/userId", "/payment/userId", "/sticky/userId"]
            .iter()
            .find_map(|path| text(v2.pointer(path)))
            .map(|id| Merchant { id });

        let customer = if options.include_personal_data() {
            customer(&v2)
        } else {
            None
        };

        redact(&mut v2, options.include_personal_data());

        Ok(Mapped {
            event_type: kind.canonical().to_owned(),
            vendor_event_type,
            vendor_event_id,
            occurred_at,
            facts: Facts {
                object,
                merchant,
                customer,
                vendor_data: v2,
                ..facts
            },
        })
    }
}

/// Sticky's event types that we know the meaning of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pay,
    PayFail,
    Refund,
    Tap,
    CheckIn,
    Other,
}

impl Kind {
    fn of(vendor_type: &str) -> Self {
        match vendor_type {
            "SESSION_CART_PAY" => Self::Pay,
            "SESSION_CART_PAY_FAIL" => Self::PayFail,
            "SESSION_CART_REFUND" => Self::Refund,
            "SESSION_READ" => Self::Tap,
            "CHECK_IN" => Self::CheckIn,
            _ => Self::Other,
        }
    }

    fn canonical(self) -> &'static str {
        match self {
            Self::Pay => "payment.succeeded",
            Self::PayFail => "payment.failed",
            Self::Refund => "refund.succeeded",
            Self::Tap => "session.tapped",
            Self::CheckIn => "session.checked_in",
            Self::Other => UNKNOWN,
        }
    }
}

/// The sums of one event, all in one currency, written into its facts.
struct Money;

impl Money {
    /// Reads `payment.*`, falling back field by field to `event.customData.*`;
    /// a refund's own amount is `event.customData.refundAmount`. A figure
    /// that is not an integer of minor units, or a currency that is not an
    /// ISO 4217 code, is skipped with a note, never rounded or guessed.
    fn read(
        payment: Option<&Value>,
        custom: Option<&Value>,
        kind: Kind,
        options: &MapOptions,
        facts: &mut Facts,
    ) {
        let field = |name: &str| -> Option<(String, &Value)> {
            [("v2.payment", payment), ("v2.event.customData", custom)]
                .into_iter()
                .find_map(|(at, obj)| {
                    obj.and_then(|o| o.get(name))
                        .filter(|v| !v.is_null())
                        .map(|v| (format!("{at}.{name}"), v))
                })
        };
        let minor = |facts: &mut Facts, found: Option<(String, &Value)>| -> Option<i64> {
            let (at, v) = found?;
            let read = v
                .as_i64()
                .map(Some)
                .ok_or_else(|| MappingError::new("not an integer of minor units"));
            optional(facts, &at, read)
        };

        let total = minor(facts, field("total"));
        let (refund_own, refunded_total) = if kind == Kind::Refund {
            let own = custom
                .and_then(|c| c.get("refundAmount"))
                .filter(|v| !v.is_null())
                .map(|v| ("v2.event.customData.refundAmount".to_owned(), v));
            let own = minor(facts, own);
            (own, minor(facts, field("refundedTotal")).filter(|r| *r > 0))
        } else {
            (None, None)
        };
        let tip = minor(facts, field("tip"));
        let discount = minor(facts, field("discount"));
        let main = refund_own.or(refunded_total).or(total);
        if main.is_none() && tip.is_none() && discount.is_none() {
            return;
        }

        let currency = match field("currency") {
            None => options.currency.clone(),
            Some((at, v)) => match v
                .as_str()
                .map(str::trim)
                .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                Some(code) => code.to_ascii_uppercase(),
                None => {
                    facts.skip(&at, "not an ISO 4217 code, so no amount is given");
                    return;
                }
            },
        };
        let amount = |m: Option<i64>| m.map(|m| Amount::from_minor(m, &currency));
        facts.amount = amount(main);
        facts.refunded_total = amount(refunded_total);
        facts.tip = amount(tip);
        facts.discount = amount(discount);
    }
}

/// A non-empty string at a JSON pointer under `v2`, or a mapping error naming it.
fn required_text(v2: &Value, pointer: &str) -> Result<String, MappingError> {
    text(v2.pointer(pointer)).ok_or_else(|| {
        MappingError::new(format!(
            "v2{} is missing or not a non-empty string",
            pointer.replace('/', ".")
        ))
    })
}

/// A non-empty string value.
fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Unix seconds (Sticky's documented form); an RFC 3339 string is also accepted.
fn time_of(v: &Value) -> Option<time::OffsetDateTime> {
    match v {
        Value::Number(n) => n.as_i64().filter(|s| *s > 0).and_then(from_unix_seconds),
        Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
}

/// The payer, from `payment` first, then the user sectors of the session.
fn customer(v2: &Value) -> Option<Customer> {
    let sources = [
        v2.get("payment"),
        v2.pointer("/session/crossUserSector"),
        v2.pointer("/session/userSector"),
    ];
    let pick = |name: &str| {
        sources
            .iter()
            .flatten()
            .find_map(|src| match src.get(name)? {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                v @ (Value::Object(_) | Value::Array(_)) => Some(v.to_string()),
                _ => None,
            })
    };
    let c = Customer {
        name: pick("name"),
        email: pick("email"),
        phone: pick("phone"),
        address: pick("address"),
    };
    (c != Customer::default()).then_some(c)
}

/// Payer fields of a `payment` object; personal, unlike `flow.name` or `sticky.name`.
const PAYER_FIELDS: [&str; 5] = ["name", "companyName", "email", "phone", "address"];

/// Per-user free-form stores of a session; any key in them may be personal.
const USER_SECTORS: [&str; 2] = ["crossUserSector", "userSector"];

/// Lower-cased key with separators dropped: `user_private_key` → `userprivatekey`.
fn normalized(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Keys that hold credentials; removed whatever `include_personal_data` says.
fn is_secret_key(key: &str) -> bool {
    let k = normalized(key);
    [
        "privatekey",
        "secret",
        "password",
        "apikey",
        "accesstoken",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Keys that are personal wherever they appear (`name` is not: flows and stickies have names).
fn is_personal_key(key: &str) -> bool {
    matches!(
        normalized(key).as_str(),
        "email"
            | "emailaddress"
            | "phone"
            | "phonenumber"
            | "mobile"
            | "telephone"
            | "address"
            | "postaladdress"
            | "billingaddress"
            | "shippingaddress"
            | "companyname"
            | "firstname"
            | "lastname"
            | "fullname"
            | "dateofbirth"
    )
}

/// Removes secrets always and personal data unless `personal`; see the module doc.
fn redact(value: &mut Value, personal: bool) {
    let mut secrets = Vec::new();
    strip(value, personal, &mut secrets);
    secrets.retain(|s| s.len() >= 8);
    secrets.sort_unstable();
    secrets.dedup();
    if secrets.is_empty() {
        return;
    }
    // One automaton for every removed secret, so each remaining string is
    // read once however many secrets were removed: a body with thousands of
    // secret-named keys costs linear time, not strings x secrets.
    match aho_corasick::AhoCorasick::new(&secrets) {
        Ok(any_secret) => scrub(value, &any_secret),
        // Cannot happen for plain strings; fail closed: no string survives.
        Err(_) => scrub_all_strings(value),
    }
}

/// Removes keys, remembering the removed secret strings for [`scrub`].
fn strip(value: &mut Value, personal: bool, secrets: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let secret_keys: Vec<String> =
                map.keys().filter(|k| is_secret_key(k)).cloned().collect();
            for key in secret_keys {
                if let Some(v) = map.remove(&key) {
                    collect_strings(&v, secrets);
                }
            }
            if !personal {
                strip_personal(map);
            }
            for v in map.values_mut() {
                strip(v, personal, secrets);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, personal, secrets)),
        _ => {}
    }
}

fn strip_personal(map: &mut Map<String, Value>) {
    map.retain(|k, _| !is_personal_key(k) && !USER_SECTORS.contains(&k.as_str()));
    if let Some(Value::Object(payment)) = map.get_mut("payment") {
        for field in PAYER_FIELDS {
            payment.remove(field);
        }
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// Replaces any string that embeds a removed secret value (e.g. in a URL).
fn scrub(value: &mut Value, secrets: &aho_corasick::AhoCorasick) {
    match value {
        Value::String(s) if secrets.is_match(s.as_str()) => {
            *s = "[redacted]".to_owned();
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub(v, secrets)),
        _ => {}
    }
}

fn scrub_all_strings(value: &mut Value) {
    match value {
        Value::String(s) => *s = "[redacted]".to_owned(),
        Value::Array(items) => items.iter_mut().for_each(scrub_all_strings),
        Value::Object(map) => map.values_mut().for_each(scrub_all_strings),
        _ => {}
    }
}

/// The body with the same redaction as `vendor_data`, applied to the whole
/// document (deprecated keys too), for use as an `unmapped` event's raw body;
/// `None` when the body is not JSON and so cannot be redacted.
///
/// Why: the pipeline publishes an unmappable body verbatim, which for Sticky
/// would publish private keys and payer details.
pub(crate) fn redacted_raw_body(body: &[u8], options: &MapOptions) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    redact(&mut doc, options.include_personal_data());
    serde_json::to_vec(&doc).ok()
}

#[cfg(test)]
mod tests;
