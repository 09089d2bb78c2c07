//! The HTTP ceiling for `scripts/bench`: a TLS server that does nothing but
//! read the request body and answer 200 `{"id":"x"}`, with the gateway's TLS
//! and HTTP stack (rustls with the ring provider, TLS 1.3 and 1.2, ALPN `h2`
//! and `http/1.1`, as in `src/tls.rs`; hyper-util's auto builder as in
//! `src/server.rs`), so the gap to the gateway is the gateway's own work:
//! authentication, mapping, dedup, publishing and waiting for the confirm.
//!
//! ```sh
//! bench_http_ceiling <listen addr> <cert.pem> <key.pem>   # runs until killed
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn tls(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("readable certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("valid PEM certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("valid PEM key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole body, as the gateway does before authenticating.
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"id":"x"}"#)))
        .expect("valid response"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: bench_http_ceiling <listen addr> <cert.pem> <key.pem>");
        std::process::exit(2);
    }
    let acceptor = TlsAcceptor::from(tls(&args[1], &args[2]));
    let listener = TcpListener::bind(&args[0]).await.expect("bind");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    eprintln!("bench_http_ceiling: listening on {}", args[0]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, builder) = (acceptor.clone(), builder.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(answer);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
