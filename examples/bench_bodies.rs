//! Pre-generates signed USAePay webhook requests for `scripts/bench`.
//!
//! wrk cannot compute HMACs, so this writes N distinct requests (a unique
//! `event_id` each, so the gateway's dedup window never answers a repeat),
//! one per line: `<X-Signature hex>\t<body>`, dealt round-robin into `files`
//! files `<out>.0`, `<out>.1`, ... (one per wrk thread, so each thread loads
//! only its own share). The bodies are the README's
//! sample USAePay `transaction.sale.success` with the `event_id` replaced,
//! signed exactly as USAePay signs (lowercase hex HMAC-SHA256 of the raw body).
//! The Basic credentials are the same for every request, so the wrk script
//! takes them from the environment instead of this file.
//!
//! ```sh
//! cargo run --release --example bench_bodies -- <count> <out-prefix> <signature-key> [files=1] [run-tag]
//! ```
//!
//! `run-tag` (hex, default: the current time in ns) goes into the first 16 hex
//! digits of every `event_id`, so files generated for different runs never
//! share ids.

use std::io::{BufWriter, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookgate::auth::{HmacVerifier, SignatureScheme};
use hookgate::secret::Secret;

/// The sample USAePay body (as in scripts/quickstart and the tests).
const BODY: &str = r#"{"type":"event","event_triggered":"2021-04-07 15:14:26","event_type":"transaction.sale.success","event_body":{"merchant":{"merch_key":"7qwnw4j2kmqvrb3"},"object":{"type":"transaction","key":"1nftvzx7xtcggm3","amount_detail":{"amount":"5.00"},"authcode":"538228"}},"event_id":"EVENT_ID"}"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: bench_bodies <count> <out-prefix> <signature-key> [files=1] [run-tag-hex]"
        );
        std::process::exit(2);
    }
    let count: u64 = args[0].parse().expect("count is a number");
    let out = &args[1];
    let signer = HmacVerifier::new(
        SignatureScheme::HexBody {
            header: "x-signature",
        },
        vec![Secret::new(&args[2])],
        Duration::from_secs(300),
    );
    let files: u64 = args
        .get(3)
        .map_or(1, |a| a.parse().expect("files is a number"));
    let tag = match args.get(4) {
        Some(tag) => u64::from_str_radix(tag, 16).expect("run tag is hex"),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    let mut writers: Vec<_> = (0..files.max(1))
        .map(|i| {
            let path = format!("{out}.{i}");
            let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            BufWriter::with_capacity(1 << 20, file)
        })
        .collect();
    let (head, tail) = BODY.split_once("EVENT_ID").expect("placeholder present");
    let mut body = Vec::with_capacity(BODY.len() + 64);
    for n in 0..count {
        body.clear();
        body.extend_from_slice(head.as_bytes());
        write!(body, "{tag:016x}{n:048x}").expect("write to Vec");
        body.extend_from_slice(tail.as_bytes());
        let signature = signer.sign(0, None, &body);
        let w = &mut writers[(n % files.max(1)) as usize];
        w.write_all(signature.as_bytes()).expect("write");
        w.write_all(b"\t").expect("write");
        w.write_all(&body).expect("write");
        w.write_all(b"\n").expect("write");
    }
    for w in &mut writers {
        w.flush().expect("flush");
    }
    eprintln!(
        "bench_bodies: wrote {count} signed requests ({} B body) to {out}.0..{}",
        body.len(),
        files.max(1) - 1
    );
}
