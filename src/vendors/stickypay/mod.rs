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

        let customer = if options.include_personal_data {
            customer(&v2)
        } else {
            None
        };

        redact(&mut v2, options.include_personal_data);

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
    redact(&mut doc, options.include_personal_data);
    serde_json::to_vec(&doc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn many_removed_secrets_are_each_scrubbed_wherever_they_are_embedded() {
        let mut doc = serde_json::Map::new();
        for n in 0..2000 {
            doc.insert(format!("secret_{n}"), json!(format!("token-{n:06}-abcdef")));
            doc.insert(
                format!("url_{n}"),
                json!(format!("https://x.test/?t=token-{n:06}-abcdef")),
            );
            doc.insert(format!("note_{n}"), json!(format!("plain note {n}")));
        }
        let mut doc = Value::Object(doc);
        redact(&mut doc, false);
        assert!(doc.get("secret_7").is_none());
        assert_eq!(doc["url_1999"], "[redacted]");
        assert_eq!(doc["url_0"], "[redacted]");
        assert_eq!(doc["note_1999"], "plain note 1999");
    }

    const PRIVATE_KEY: &str = "private:5f1c9a7e-3b2d-4c8e-9f0a-1b2c3d4e5f60";

    fn map_value(body: &Value, personal: bool) -> Result<Mapped, MappingError> {
        let options = MapOptions {
            include_personal_data: personal,
            currency: "USD".to_owned(),
            ..MapOptions::default()
        };
        let verified = Verified::assume_verified_for_tests(serde_json::to_vec(body).unwrap());
        Stickypay.map(&verified, &options)
    }

    fn payment_body() -> Value {
        json!({
            "payment": { "userPrivateKey": PRIVATE_KEY, "email": "old@example.com" },
            "v2": {
                "event": {
                    "type": "SESSION_CART_PAY",
                    "id": "0b6f1f0e-8a51-4d3c-9d7e-2f1a6c0d9e11",
                    "customData": { "total": 360, "currency": "GBP", "tip": 0, "discount": 0 }
                },
                "payment": {
                    "id": "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13",
                    "userId": "payment-owner",
                    "sessionPaidAt": 1707381745,
                    "refundedAt": null,
                    "refundedTotal": 0,
                    "currency": "GBP",
                    "total": 360,
                    "discount": 20,
                    "tip": 50,
                    "gateway": "GATEWAY_NOOP",
                    "name": "Timothy Payer",
                    "companyName": "Payer Widgets Ltd",
                    "email": "timothy.payer@example.org",
                    "phone": "+447700900123",
                    "address": "1 Payer Street, London",
                    "paymentGatewayExtra": { "callback": format!("https://x.test/cb?key={PRIVATE_KEY}") },
                    "userPrivateKey": PRIVATE_KEY
                },
                "flow": { "id": "flow-1", "userId": "flow-owner", "name": "Food and drink" },
                "sticky": { "id": "sticky-1", "userId": "sticky-owner", "name": "Room 15" },
                "session": {
                    "id": "session-1",
                    "crossUserSector": { "name": "Timothy Payer", "email": "timothy.payer@example.org" },
                    "userSector": { "loyaltyNumber": "LOYAL-998877" },
                    "applicationSector": { "paymentId": "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13", "privateKey": PRIVATE_KEY }
                }
            }
        })
    }

    #[test]
    fn without_opt_in_no_secret_and_no_personal_data_is_published() {
        let mapped = map_value(&payment_body(), false).unwrap();
        let out = serde_json::to_string(&mapped.facts).unwrap();
        for leak in [
            PRIVATE_KEY,
            "5f1c9a7e",
            "userPrivateKey",
            "privateKey",
            "timothy.payer@example.org",
            "old@example.com",
            "Timothy Payer",
            "Payer Widgets",
            "+447700900123",
            "Payer Street",
            "LOYAL-998877",
        ] {
            assert!(!out.contains(leak), "`{leak}` leaked: {out}");
        }
        assert!(mapped.facts.customer.is_none());
        // Non-personal names and the rest of the payment stay.
        assert_eq!(mapped.facts.vendor_data["flow"]["name"], "Food and drink");
        assert_eq!(mapped.facts.vendor_data["sticky"]["name"], "Room 15");
        assert_eq!(
            mapped.facts.vendor_data["payment"]["gateway"],
            "GATEWAY_NOOP"
        );
        assert_eq!(
            mapped.facts.vendor_data["payment"]["paymentGatewayExtra"]["callback"],
            "[redacted]"
        );
        assert_eq!(
            mapped.facts.vendor_data["session"]["applicationSector"]["paymentId"],
            "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13"
        );
    }

    #[test]
    fn with_opt_in_the_payer_is_published_but_never_the_private_key() {
        let mapped = map_value(&payment_body(), true).unwrap();
        let out = serde_json::to_string(&mapped.facts).unwrap();
        assert!(!out.contains(PRIVATE_KEY), "private key leaked: {out}");
        assert!(!out.contains("5f1c9a7e"), "private key leaked: {out}");
        assert!(
            !out.contains("userPrivateKey") && !out.contains("\"privateKey\""),
            "{out}"
        );
        let customer = mapped.facts.customer.expect("customer");
        assert_eq!(customer.email.as_deref(), Some("timothy.payer@example.org"));
        assert_eq!(customer.name.as_deref(), Some("Timothy Payer"));
        assert_eq!(customer.phone.as_deref(), Some("+447700900123"));
        assert_eq!(customer.address.as_deref(), Some("1 Payer Street, London"));
        assert_eq!(
            mapped.facts.vendor_data["payment"]["email"],
            "timothy.payer@example.org"
        );
        assert_eq!(
            mapped.facts.vendor_data["session"]["userSector"]["loyaltyNumber"],
            "LOYAL-998877"
        );
    }

    #[test]
    fn a_payment_maps_to_minor_units_paid_time_payment_and_flow_owner() {
        let mapped = map_value(&payment_body(), false).unwrap();
        assert_eq!(mapped.event_type, "payment.succeeded");
        assert_eq!(mapped.vendor_event_type, "SESSION_CART_PAY");
        assert_eq!(
            mapped.vendor_event_id,
            "0b6f1f0e-8a51-4d3c-9d7e-2f1a6c0d9e11"
        );
        let amount = mapped.facts.amount.unwrap();
        assert_eq!(
            (
                amount.value.as_str(),
                amount.minor,
                amount.currency.as_str()
            ),
            ("3.60", 360, "GBP")
        );
        assert_eq!(mapped.facts.tip.unwrap().value, "0.50");
        assert_eq!(mapped.facts.discount.unwrap().value, "0.20");
        assert_eq!(
            crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
            "2024-02-08T08:42:25Z"
        );
        let object = mapped.facts.object.unwrap();
        assert_eq!(
            (object.kind.as_str(), object.id.as_str()),
            ("payment", "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13")
        );
        assert_eq!(mapped.facts.merchant.unwrap().id, "flow-owner");
        // Deprecated top-level keys are not published.
        assert!(mapped.facts.vendor_data.get("v2").is_none());
        assert!(mapped.facts.vendor_data.get("event").is_some());
    }

    #[test]
    fn event_types_map_and_unknown_ones_are_not_errors() {
        for (vendor, ours) in [
            ("SESSION_CART_PAY", "payment.succeeded"),
            ("SESSION_CART_REFUND", "refund.succeeded"),
            ("SESSION_CART_PAY_FAIL", "payment.failed"),
            ("SESSION_READ", "session.tapped"),
            ("CONNECTION_BAD", "unknown"),
            ("MESSAGE", "unknown"),
            ("CHECK_IN", "session.checked_in"),
            ("SESSION_SOMETHING_NEW", "unknown"),
            ("session_read", "unknown"),
        ] {
            let body = json!({ "v2": { "event": { "type": vendor, "id": "e1" }, "session": { "id": "s1" } } });
            let mapped = map_value(&body, false).unwrap();
            assert_eq!(mapped.event_type, ours, "{vendor}");
            assert_eq!(mapped.facts.object.unwrap().kind, "session");
            assert!(mapped.facts.amount.is_none());
            assert!(mapped.occurred_at.is_none());
        }
    }

    #[test]
    fn bodies_without_v2_or_its_event_identity_are_unmapped() {
        for body in [
            json!({ "event": { "type": "SESSION_READ", "id": "e1" } }),
            json!({ "v2": null }),
            json!({ "v2": [] }),
            json!({ "v2": { "event": { "type": "SESSION_READ" } } }),
            json!({ "v2": { "event": { "id": "e1" } } }),
            json!({ "v2": { "event": { "type": "", "id": "e1" } } }),
            json!({ "v2": { "event": { "type": "SESSION_READ", "id": 7 } } }),
            json!(["v2"]),
        ] {
            assert!(map_value(&body, false).is_err(), "{body}");
        }
    }

    #[test]
    fn non_integer_money_is_skipped_with_a_note_not_rounded_or_unmapped() {
        let mut body = payment_body();
        body["v2"]["payment"]["total"] = json!(3.6);
        let mapped = map_value(&body, false).unwrap();
        assert_eq!(mapped.event_type, "payment.succeeded");
        assert!(mapped.facts.amount.is_none(), "3.6 is not rounded");
        assert_eq!(
            mapped.facts.tip.as_ref().unwrap().minor,
            50,
            "the rest stays"
        );
        assert_eq!(mapped.facts.skipped.len(), 1);
        assert_eq!(mapped.facts.skipped[0].field, "v2.payment.total");
        assert!(!mapped.facts.skipped[0].reason.contains("3.6"));

        body["v2"]["payment"]["total"] = json!("360");
        let mapped = map_value(&body, false).unwrap();
        assert!(mapped.facts.amount.is_none());
        assert_eq!(mapped.facts.skipped[0].field, "v2.payment.total");

        let mut body = payment_body();
        body["v2"]["payment"]["currency"] = json!("pounds");
        let mapped = map_value(&body, false).unwrap();
        assert!(mapped.facts.amount.is_none() && mapped.facts.tip.is_none());
        assert_eq!(mapped.facts.skipped[0].field, "v2.payment.currency");
        assert!(!mapped.facts.skipped[0].reason.contains("pounds"));
    }

    #[test]
    fn a_refund_is_its_own_amount_with_the_running_total_beside_it() {
        let mut body = payment_body();
        body["v2"]["event"]["type"] = json!("SESSION_CART_REFUND");
        body["v2"]["event"]["customData"]["refundAmount"] = json!(100);
        body["v2"]["event"]["createdAt"] = json!(1707389000);
        body["v2"]["payment"]["refundedTotal"] = json!(300);
        body["v2"]["payment"]["refundedAt"] = json!(1707385345);
        let mapped = map_value(&body, false).unwrap();
        assert_eq!(mapped.event_type, "refund.succeeded");
        assert_eq!(mapped.facts.amount.unwrap().minor, 100);
        assert_eq!(mapped.facts.refunded_total.unwrap().minor, 300);
        assert_eq!(
            crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
            "2024-02-08T10:43:20Z",
            "the event's own time, not the payment's last refund"
        );
    }

    #[test]
    fn without_its_own_amount_a_refund_uses_the_refunded_total_when_set() {
        let mut body = payment_body();
        body["v2"]["event"]["type"] = json!("SESSION_CART_REFUND");
        body["v2"]["payment"]["refundedTotal"] = json!(200);
        body["v2"]["payment"]["refundedAt"] = json!(1707385345);
        let mapped = map_value(&body, false).unwrap();
        assert_eq!(mapped.event_type, "refund.succeeded");
        assert_eq!(mapped.facts.amount.unwrap().minor, 200);
        assert_eq!(mapped.facts.refunded_total.unwrap().minor, 200);
        assert_eq!(
            crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
            "2024-02-08T09:42:25Z"
        );

        body["v2"]["payment"]["refundedTotal"] = json!(0);
        body["v2"]["payment"]["refundedAt"] = json!(null);
        let mapped = map_value(&body, false).unwrap();
        assert_eq!(mapped.facts.amount.unwrap().minor, 360);
        assert!(mapped.facts.refunded_total.is_none());
        assert!(mapped.occurred_at.is_none());
    }

    #[test]
    fn a_failed_payment_carries_its_amount_time_and_payment() {
        let body = json!({ "v2": {
            "event": { "type": "SESSION_CART_PAY_FAIL", "id": "e-fail" },
            "payment": { "userPaymentId": "up-1", "userId": "merchant-1", "total": 999,
                         "currency": "GBP", "sessionFailedAt": 1707381745 }
        } });
        let mapped = map_value(&body, false).unwrap();
        assert_eq!(mapped.event_type, "payment.failed");
        assert_eq!(mapped.facts.amount.unwrap().value, "9.99");
        assert_eq!(mapped.facts.object.unwrap().id, "up-1");
        assert_eq!(
            mapped.facts.merchant.unwrap().id,
            "merchant-1",
            "no flow: the payment's owner"
        );
        assert_eq!(
            crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
            "2024-02-08T08:42:25Z"
        );
    }

    #[test]
    fn currency_falls_back_to_custom_data_then_the_source() {
        let mut body = payment_body();
        body["v2"]["payment"]["currency"] = json!(null);
        body["v2"]["event"]["customData"]["currency"] = json!("jpy");
        body["v2"]["payment"]["total"] = json!(1500);
        let amount = map_value(&body, false).unwrap().facts.amount.unwrap();
        assert_eq!(
            (amount.value.as_str(), amount.currency.as_str()),
            ("1500", "JPY")
        );

        body["v2"]["event"]["customData"] = json!({});
        let amount = map_value(&body, false).unwrap().facts.amount.unwrap();
        assert_eq!(
            (amount.value.as_str(), amount.currency.as_str()),
            ("15.00", "USD")
        );
    }

    #[test]
    fn the_unmapped_raw_body_can_be_redacted_too() {
        let body = serde_json::to_vec(&payment_body()).unwrap();
        let options = MapOptions::default();
        let redacted = String::from_utf8(redacted_raw_body(&body, &options).unwrap()).unwrap();
        for leak in [
            PRIVATE_KEY,
            "timothy.payer@example.org",
            "old@example.com",
            "Timothy Payer",
        ] {
            assert!(!redacted.contains(leak), "`{leak}` leaked: {redacted}");
        }
        assert!(redacted_raw_body(b"{not json", &options).is_none());
    }
}
