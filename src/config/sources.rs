//! Building each `[[source]]`: its vendor, authentication, quota, mapping
//! options and look-ups, each problem reported with the key it is about.

use super::*;

pub(super) fn build_sources(b: &mut Builder, raw: &[RawSource], default_rate: Rate) -> Sources {
    if raw.is_empty() {
        b.error(
            "source",
            "no [[source]] configured: nothing could be received",
        );
    }
    let mut seen = HashSet::new();
    let mut built = Vec::new();
    for (i, source) in raw.iter().enumerate() {
        let at = format!("source[{i}]");
        let id = source.id.clone();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if !id_ok {
            b.error(
                format!("{at}.id"),
                format!("`{id}` must be 1 to 64 characters of a-z, 0-9, `_` or `-`"),
            );
        } else if id == UNKNOWN_SOURCE {
            b.error(
                format!("{at}.id"),
                "`unknown` is reserved: requests to no configured source are counted under it",
            );
        } else if !seen.insert(id.clone()) {
            b.error(
                format!("{at}.id"),
                format!("`{id}` is used by more than one source"),
            );
        }
        let vendor = match VendorKind::from_name(&source.vendor) {
            Some(v) => Some(v),
            None => {
                b.error(
                    format!("{at}.vendor"),
                    format!(
                        "unknown vendor `{}`; expected one of: {}",
                        source.vendor,
                        VendorKind::ALL.map(|v| v.name()).join(", ")
                    ),
                );
                None
            }
        };
        let options = build_options(b, &at, source, vendor);
        let auth = match &source.auth {
            Some(auth) => build_auth(b, &at, auth, vendor),
            None => {
                b.error(
                    format!("{at}.auth"),
                    "missing: every source needs at least one of basic, hmac, standard_webhooks, token, ip_allow",
                );
                None
            }
        };
        let rate = b.rate(
            &format!("{at}.rate_limit"),
            source.rate_limit.as_ref(),
            default_rate,
        );
        let enrichment = source
            .enrich
            .as_ref()
            .and_then(|raw| build_enrichment(b, &at, raw, vendor));
        if let (Some(vendor), Some(auth)) = (vendor, auth) {
            built.push(Source {
                id,
                vendor,
                auth,
                options,
                limiter: Arc::new(SourceLimiter::new(rate)),
                enrichment,
            });
        }
    }
    Sources::from_sources(built)
}

fn build_enrichment(
    b: &mut Builder,
    at: &str,
    raw: &RawEnrich,
    vendor: Option<VendorKind>,
) -> Option<SourceEnrichment> {
    let at = format!("{at}.enrich");
    // An unknown vendor is reported at `vendor`; its look-ups cannot be checked.
    let vendor = vendor?;
    let kinds = vendor.vendor().lookup_paths();
    if kinds.is_empty() {
        b.error(
            &at,
            format!(
                "vendor `{}` sends whole records: it has no thin pings to look up",
                vendor.name()
            ),
        );
        return None;
    }
    let mut api = LookupApi::new(
        b.expand_required(&format!("{at}.base_url"), &raw.base_url),
        b.expand_required(&format!("{at}.username"), &raw.username),
        Secret::new(b.expand_required(&format!("{at}.api_key"), &raw.api_key)),
        kinds,
    );
    api.timeout = b.duration_ms(
        &format!("{at}.timeout_ms"),
        raw.timeout_ms,
        api.timeout.as_millis() as u64,
    );
    api.max_concurrency = b.count(
        &format!("{at}.max_concurrency"),
        raw.max_concurrency,
        api.max_concurrency,
        MAX_LOOKUP_CONCURRENCY,
    );
    for (kind, template) in raw.paths.iter().flatten() {
        let key = format!("{at}.paths.{kind}");
        if !api.paths.contains_key(kind) {
            let known: Vec<&str> = kinds.iter().map(|k| k.kind).collect();
            b.error(
                key,
                format!(
                    "`{}` has no `{kind}` look-up; its kinds are {}",
                    vendor.name(),
                    known.join(", ")
                ),
            );
            continue;
        }
        let expanded = b.expand(&key, template);
        api.paths.insert(kind.clone(), expanded);
    }
    if let Err(problem) = api.validate() {
        b.error(format!("{at}.{}", problem.field), problem.message);
        return None;
    }
    let ttl = Duration::from_secs(
        raw.cache_ttl_secs
            .unwrap_or(crate::enrich::DEFAULT_CACHE_TTL.as_secs()),
    );
    let capacity = raw
        .cache_capacity
        .unwrap_or(crate::enrich::DEFAULT_CACHE_CAPACITY);
    let inline_deadline = b.duration_ms(
        &format!("{at}.inline_deadline_ms"),
        raw.inline_deadline_ms,
        crate::enrich::INLINE_DEADLINE.as_millis() as u64,
    );
    let retry_period = match raw.retry_period_secs {
        Some(0) => {
            b.error(format!("{at}.retry_period_secs"), "must be greater than 0");
            crate::enrich::RETRY_PERIOD
        }
        Some(secs) => Duration::from_secs(secs),
        None => crate::enrich::RETRY_PERIOD,
    };
    Some(SourceEnrichment {
        enricher: Enricher::new(api, ttl, capacity),
        inline_deadline,
        retry_period,
    })
}

fn build_options(
    b: &mut Builder,
    at: &str,
    raw: &RawSource,
    vendor: Option<VendorKind>,
) -> MapOptions {
    let mut options = MapOptions {
        // Every source of a vendor with options has them, defaults or not.
        vendor: match vendor {
            Some(VendorKind::Strictly) => VendorOptions::Strictly {
                amount_unit: AmountUnit::Minor,
            },
            Some(VendorKind::Stickypay) => VendorOptions::Stickypay {
                include_personal_data: false,
            },
            _ => VendorOptions::None,
        },
        ..MapOptions::default()
    };
    if let Some(unit) = &raw.amount_unit {
        if vendor.is_some_and(|v| v != VendorKind::Strictly) {
            b.error(
                format!("{at}.amount_unit"),
                "only used by vendor `strictly`",
            );
        }
        match unit.as_str() {
            "minor" => {
                options.vendor = VendorOptions::Strictly {
                    amount_unit: AmountUnit::Minor,
                }
            }
            "major" => {
                options.vendor = VendorOptions::Strictly {
                    amount_unit: AmountUnit::Major,
                }
            }
            other => b.error(
                format!("{at}.amount_unit"),
                format!("`{other}` is not `minor` or `major`"),
            ),
        }
    }
    if let Some(currency) = &raw.currency {
        let currency = b.expand(&format!("{at}.currency"), currency);
        if currency.len() == 3 && currency.bytes().all(|c| c.is_ascii_uppercase()) {
            options.currency = currency;
        } else {
            b.error(
                format!("{at}.currency"),
                format!("`{currency}` is not an ISO 4217 code such as USD"),
            );
        }
    }
    if let Some(include) = raw.include_personal_data {
        if vendor.is_some_and(|v| v != VendorKind::Stickypay) {
            b.error(
                format!("{at}.include_personal_data"),
                "only used by vendor `stickypay`",
            );
        }
        options.vendor = VendorOptions::Stickypay {
            include_personal_data: include,
        };
    }
    match (&raw.map, vendor) {
        (Some(map), Some(VendorKind::Generic)) => {
            match crate::vendors::generic::GenericMap::build(map) {
                Ok(map) => options.vendor = VendorOptions::Generic(std::sync::Arc::new(map)),
                Err(problems) => {
                    for problem in problems {
                        b.error(format!("{at}.map.{}", problem.key), problem.message);
                    }
                }
            }
        }
        (None, Some(VendorKind::Generic)) => b.error(
            format!("{at}.map"),
            "missing: a generic source says where each field comes from ([source.map] with at least id and type)",
        ),
        (Some(_), Some(_)) => b.error(format!("{at}.map"), "only used by vendor `generic`"),
        _ => {}
    }
    options
}

fn build_auth(
    b: &mut Builder,
    at: &str,
    raw: &RawAuth,
    vendor: Option<VendorKind>,
) -> Option<Authenticator> {
    let at = format!("{at}.auth");
    let mut auth = AuthMethods::default();
    let mut methods = 0;
    if let Some(basic) = &raw.basic {
        methods += 1;
        let username = b.expand_required(&format!("{at}.basic.username"), &basic.username);
        let password = b.expand_required(&format!("{at}.basic.password"), &basic.password);
        if username.contains(':') {
            b.error(format!("{at}.basic.username"), "must not contain `:`");
        }
        auth.basic = Some(BasicCredentials::new(&username, Secret::new(password)));
    }
    if let Some(hmac) = &raw.hmac {
        methods += 1;
        let scheme = vendor.and_then(|v| v.vendor().signature_scheme());
        if let (Some(v), None) = (vendor, scheme) {
            b.error(
                format!("{at}.hmac"),
                format!(
                    "vendor `{}` does not sign its webhooks; use basic, token or ip_allow",
                    v.name()
                ),
            );
        }
        if hmac.keys.is_empty() {
            b.error(format!("{at}.hmac.keys"), "must list at least one key");
        }
        let keys: Vec<Secret> = hmac
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = format!("{at}.hmac.keys[{i}]");
                Secret::new(b.expand_required(&key, k))
            })
            .collect();
        let tolerance = Duration::from_secs(hmac.tolerance_secs.unwrap_or(RawHmac::TOLERANCE_SECS));
        if let Some(scheme) = scheme {
            auth.hmac = Some(HmacVerifier::new(scheme, keys, tolerance));
        }
    }
    if let Some(standard) = &raw.standard_webhooks {
        methods += 1;
        let at = format!("{at}.standard_webhooks");
        if standard.keys.is_empty() {
            b.error(
                format!("{at}.keys"),
                "must list at least one key (whsec_...)",
            );
        }
        let keys: Vec<Secret> = standard
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Secret::new(b.expand_required(&format!("{at}.keys[{i}]"), k)))
            .collect();
        let tolerance = match standard.tolerance_secs {
            Some(0) => {
                b.error(format!("{at}.tolerance_secs"), "must be greater than 0");
                RawHmac::TOLERANCE_SECS
            }
            Some(secs) => secs,
            None => RawHmac::TOLERANCE_SECS,
        };
        match StandardWebhooks::new(&keys, Duration::from_secs(tolerance)) {
            Ok(verifier) if !keys.is_empty() => auth.standard_webhooks = Some(verifier),
            Ok(_) => {}
            Err((i, problem)) => b.error(format!("{at}.keys[{i}]"), problem.to_string()),
        }
    }
    if let Some(token) = &raw.token {
        methods += 1;
        let before = b.errors.len();
        let token = b.expand(&format!("{at}.token"), token);
        if b.errors.len() == before && token.len() < 16
            || !token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            b.error(
                format!("{at}.token"),
                "must be at least 16 characters of A-Z, a-z, 0-9, `-` or `_` (generate one with `openssl rand -hex 24`)",
            );
        }
        auth.token = Some(Secret::new(token));
    }
    if let Some(list) = &raw.ip_allow {
        methods += 1;
        if list.is_empty() {
            b.error(
                format!("{at}.ip_allow"),
                "must list at least one address or CIDR",
            );
        }
        let nets = list
            .iter()
            .enumerate()
            .filter_map(|(i, n)| b.cidr(&format!("{at}.ip_allow[{i}]"), n))
            .collect();
        auth.ip_allow = Some(IpAllowList::new(nets));
    }
    match Authenticator::new(auth) {
        Ok(auth) => Some(auth),
        // An hmac table for a vendor that does not sign leaves no method
        // built; that is reported above with its key.
        Err(_) if methods > 0 => None,
        Err(no_method) => {
            b.error(at, format!("{no_method}"));
            None
        }
    }
}
