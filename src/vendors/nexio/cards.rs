//! One card vocabulary for every spelling Nexio uses, in webhooks and in
//! look-up records alike.

use super::*;

/// `cardType` codes (official, docs/vendors.md §3.6) in look-up records.
const CARD_TYPE_CODES: [(i64, &str); 5] = [
    (10, "visa"),
    (20, "mastercard"),
    (30, "discover"),
    (40, "amex"),
    (50, "jcb"),
];

/// One brand vocabulary for every spelling Nexio uses: the official numeric
/// codes, and the names webhooks carry in varying case (`masterCard`,
/// `americanExpress`, §7.1). A name not listed is kept, lowercased.
pub(super) fn card_brand(value: &Value) -> Option<String> {
    if let Some(code) = integer_of(value) {
        return CARD_TYPE_CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, name)| (*name).to_owned());
    }
    let name: String = value
        .as_str()?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let brand = match name.as_str() {
        "" => return None,
        "mastercard" | "mc" => "mastercard",
        "amex" | "americanexpress" => "amex",
        "discover" => "discover",
        "visa" => "visa",
        "jcb" => "jcb",
        "diners" | "dinersclub" => "diners",
        other => other,
    };
    Some(brand.to_owned())
}

/// The card of a transaction (webhook `data` or look-up record): brand from
/// `cardType` (top level, `card` or `token`), last four from `card.lastFour`,
/// `card.last4` or `token.lastFour`.
pub(crate) fn card_of(fields: &Map<String, Value>) -> Option<PaymentMethod> {
    let card = fields.get("card").and_then(Value::as_object);
    let token = fields.get("token").and_then(Value::as_object);
    let brand = [
        fields.get("cardType"),
        card.and_then(|c| c.get("cardType")),
        token.and_then(|t| t.get("cardType")),
    ]
    .into_iter()
    .flatten()
    .find_map(card_brand);
    let last4 = [
        card.and_then(|c| c.get("lastFour")),
        card.and_then(|c| c.get("last4")),
        token.and_then(|t| t.get("lastFour")),
    ]
    .into_iter()
    .flatten()
    .filter_map(text_of)
    .find(|s| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()));
    (brand.is_some() || last4.is_some()).then(|| PaymentMethod {
        kind: "card".to_owned(),
        brand,
        last4,
    })
}
