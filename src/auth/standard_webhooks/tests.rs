use super::*;

/// The Standard Webhooks reference libraries' test vector
/// (standard-webhooks/standard-webhooks), recomputed with `openssl dgst`.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: u64 = 1_614_265_330;
const BODY: &str = r#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn verifier(keys: &[&str]) -> StandardWebhooks {
    let keys: Vec<Secret> = keys.iter().map(|k| Secret::new(*k)).collect();
    StandardWebhooks::new(&keys, Duration::from_secs(300)).unwrap()
}

fn headers(prefix: &str, id: &str, timestamp: &str, signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        hyper::header::HeaderName::from_bytes(format!("{prefix}-id").as_bytes()).unwrap(),
        id.parse().unwrap(),
    );
    h.insert(
        hyper::header::HeaderName::from_bytes(format!("{prefix}-timestamp").as_bytes()).unwrap(),
        timestamp.parse().unwrap(),
    );
    h.insert(
        hyper::header::HeaderName::from_bytes(format!("{prefix}-signature").as_bytes()).unwrap(),
        signature.parse().unwrap(),
    );
    h
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn the_reference_vector_verifies_under_both_header_spellings() {
    let v = verifier(&[SECRET]);
    assert_eq!(v.sign(0, ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    for prefix in ["webhook", "svix"] {
        let h = headers(prefix, ID, &TIMESTAMP.to_string(), SIGNATURE);
        assert_eq!(
            v.verify(&h, BODY.as_bytes(), at(TIMESTAMP + 10)),
            Ok(()),
            "{prefix}"
        );
    }
}

#[test]
fn the_body_id_and_timestamp_are_all_signed() {
    let v = verifier(&[SECRET]);
    let now = at(TIMESTAMP);
    let t = TIMESTAMP.to_string();
    let cases = [
        (
            headers("webhook", ID, &t, SIGNATURE),
            r#"{"test": 2432232315}"#,
        ),
        (headers("webhook", "msg_other", &t, SIGNATURE), BODY),
        (
            headers("webhook", ID, &(TIMESTAMP + 1).to_string(), SIGNATURE),
            BODY,
        ),
    ];
    for (h, body) in cases {
        assert_eq!(
            v.verify(&h, body.as_bytes(), now),
            Err(AuthError::WebhookMismatch)
        );
    }
}

#[test]
fn any_entry_may_match_any_key_for_rotation() {
    let other = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkhIQ==";
    let v = verifier(&[other, SECRET]);
    let t = TIMESTAMP.to_string();
    let decoy = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let both = format!("{decoy} v1a,c29tZXRoaW5n {SIGNATURE} v2,xyz");
    assert_eq!(
        v.verify(
            &headers("webhook", ID, &t, &both),
            BODY.as_bytes(),
            at(TIMESTAMP)
        ),
        Ok(())
    );
    assert_eq!(
        v.verify(
            &headers("webhook", ID, &t, decoy),
            BODY.as_bytes(),
            at(TIMESTAMP)
        ),
        Err(AuthError::WebhookMismatch)
    );
    // Without the right key, the right entry does not help.
    assert_eq!(
        verifier(&[other]).verify(
            &headers("webhook", ID, &t, SIGNATURE),
            BODY.as_bytes(),
            at(TIMESTAMP)
        ),
        Err(AuthError::WebhookMismatch)
    );
}

#[test]
fn timestamps_beyond_the_tolerance_either_way_are_refused() {
    let v = verifier(&[SECRET]);
    let h = headers("webhook", ID, &TIMESTAMP.to_string(), SIGNATURE);
    assert_eq!(v.verify(&h, BODY.as_bytes(), at(TIMESTAMP + 300)), Ok(()));
    assert_eq!(v.verify(&h, BODY.as_bytes(), at(TIMESTAMP - 300)), Ok(()));
    for now in [TIMESTAMP + 301, TIMESTAMP - 301] {
        assert_eq!(
            v.verify(&h, BODY.as_bytes(), at(now)),
            Err(AuthError::WebhookTimestampOutsideTolerance)
        );
    }
}

#[test]
fn bad_headers_are_refused_each_with_its_reason() {
    let v = verifier(&[SECRET]);
    let t = TIMESTAMP.to_string();
    let now = at(TIMESTAMP);
    let refused = |h: &HeaderMap| v.verify(h, BODY.as_bytes(), now).unwrap_err();
    assert_eq!(refused(&HeaderMap::new()), AuthError::WebhookHeadersMissing);
    let mut no_signature = headers("webhook", ID, &t, SIGNATURE);
    no_signature.remove("webhook-signature");
    assert_eq!(refused(&no_signature), AuthError::WebhookHeadersMissing);
    assert_eq!(
        refused(&headers("webhook", "msg.with.dots", &t, SIGNATURE)),
        AuthError::WebhookIdInvalid
    );
    assert_eq!(
        refused(&headers("webhook", ID, "16142653.30", SIGNATURE)),
        AuthError::WebhookMalformed
    );
    assert_eq!(
        refused(&headers("webhook", ID, &t, "v1a,c29tZXRoaW5n")),
        AuthError::WebhookAsymmetricUnsupported
    );
    assert_eq!(
        refused(&headers("webhook", ID, &t, "v1,not base64!")),
        AuthError::WebhookMalformed
    );
    let many = vec![SIGNATURE; 17].join(" ");
    assert_eq!(
        refused(&headers("webhook", ID, &t, &many)),
        AuthError::WebhookMalformed
    );
    let mut twice = headers("webhook", ID, &t, SIGNATURE);
    twice.append("webhook-id", "msg_second".parse().unwrap());
    assert_eq!(refused(&twice), AuthError::WebhookMalformed);
}

#[test]
fn secrets_must_be_base64_of_a_real_key() {
    let build =
        |k: &str| StandardWebhooks::new(&[Secret::new(k)], Duration::from_secs(300)).map(|_| ());
    assert_eq!(build("whsec_not*base64"), Err((0, KeyError::NotBase64)));
    assert_eq!(build("whsec_c2hvcnQ="), Err((0, KeyError::TooShort(5))));
    // The prefix is optional: the same key without it signs the same.
    let bare = verifier(&[SECRET.trim_start_matches(SECRET_PREFIX)]);
    assert_eq!(bare.sign(0, ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
}
