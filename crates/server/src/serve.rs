//! Binding, serving with the shared limits, HTTPS, and graceful shutdown.
//!
//! The rate limit is a per-process token bucket written here: tower's
//! `RateLimitLayer` is not `Clone`, so axum needs it behind a `Buffer`,
//! and it queues requests instead of refusing them with 429, which is
//! what Key Vault does and what clients of a key broker expect.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{ApiError, Error};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many TLS handshakes run at once.
const MAX_HANDSHAKES: usize = 256;

/// The limits every service gets from [`Server::serve`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// The largest request body read by [`crate::Body`] (and axum's
    /// extractors); larger ones get 413. Default 1 MiB.
    pub body_bytes: usize,
    /// Requests per process, or `None` for no limit (the default).
    pub rate: Option<RateLimit>,
    /// How long one request may take, body included; then 408. Default
    /// 30 s.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1024 * 1024,
            rate: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The defaults (1 MiB bodies, no rate limit, 30 s per request).
    pub fn new() -> Self {
        Limits::default()
    }

    /// Sets [`body_bytes`](Self::body_bytes).
    pub fn body_bytes(mut self, bytes: usize) -> Self {
        self.body_bytes = bytes;
        self
    }

    /// Sets [`rate`](Self::rate).
    pub fn rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// A token bucket for the whole process: `burst` requests at once, then
/// one more every `every`. A request that finds the bucket empty gets 429
/// with code `Throttled` and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    burst: u32,
    every: Duration,
}

impl RateLimit {
    /// `burst` requests at once (at least one), refilled at one per
    /// `every`.
    pub fn new(burst: u32, every: Duration) -> Self {
        RateLimit {
            burst: burst.max(1),
            every,
        }
    }

    /// `per_second` requests a second, with a burst of as many.
    pub fn per_second(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        RateLimit::new(per_second, Duration::from_secs(1) / per_second)
    }
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Bucket {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    /// Takes a token, or says how long until there is one.
    fn take(&self) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let every = self.limit.every.as_secs_f64();
        if every > 0.0 {
            let refill = now.duration_since(*last).as_secs_f64() / every;
            *tokens = (*tokens + refill).min(f64::from(self.limit.burst));
        } else {
            *tokens = f64::from(self.limit.burst);
        }
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) * every))
        }
    }
}

async fn rate_limit(State(bucket): State<Arc<Bucket>>, request: Request, next: Next) -> Response {
    match bucket.take() {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "too many requests: try again later",
            )
            .into_response();
            let seconds = wait.as_secs().saturating_add(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            "the request took too long",
        )
        .into_response(),
    }
}

/// One `debug` event per request (target `confsum_server::request`):
/// method, path, status and time. Never the query, headers or body: they
/// can carry bearer tokens, attestation tokens and documents.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let start = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        target: "confsum_server::request",
        "{method} {path} -> {} in {:.1} ms",
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1e3
    );
    response
}

/// The router with the shared limits (and the request log) around it.
fn with_limits(router: Router, limits: &Limits) -> Router {
    let mut router = router
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ));
    if let Some(rate) = limits.rate {
        router = router.layer(middleware::from_fn_with_state(
            Arc::new(Bucket::new(rate)),
            rate_limit,
        ));
    }
    router.layer(middleware::from_fn(log_request))
}

/// A certificate chain and private key for HTTPS (rustls with the *ring*
/// provider; TLS 1.2 and 1.3, HTTP/1.1).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
}

impl TlsConfig {
    /// From PEM: the certificate chain (leaf first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// [`Error::Pem`] for PEM that does not parse, [`Error::NoCertificate`]
    /// or [`Error::NoPrivateKey`] when one is missing, and [`Error::Tls`]
    /// when rustls refuses them (a key that is not the certificate's).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Pem)?;
        if certs.is_empty() {
            return Err(Error::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => Error::NoPrivateKey,
            other => Error::Pem(other),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(Error::Tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// From PEM files, as [`from_pem`](Self::from_pem).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be read, otherwise as
    /// [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })
        };
        let key_pem = zeroize::Zeroizing::new(read(key)?);
        TlsConfig::from_pem(&read(cert_chain)?, &key_pem)
    }
}

/// A bound listener, ready to serve a service's [`Router`] with the
/// shared [`Limits`], over HTTP or HTTPS, until a shutdown future
/// resolves.
///
/// ```no_run
/// use confsum_server::{Limits, RateLimit, Server, TlsConfig, shutdown_signal};
/// # fn service_router() -> axum::Router { axum::Router::new() }
/// # fn main() -> Result<(), confsum_server::Error> {
/// let server = Server::bind("127.0.0.1:8443".parse().unwrap())?
///     .tls(TlsConfig::from_pem_files("cert.pem".as_ref(), "key.pem".as_ref())?)
///     .limits(Limits::new().rate(RateLimit::per_second(500)));
/// println!("listening on {}", server.url());
/// server.serve_blocking(service_router(), shutdown_signal())
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    tls: Option<TlsConfig>,
    limits: Limits,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one), so that the address is
    /// known before serving starts.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`].
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let bind_error = |source| Error::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Server {
            listener,
            addr,
            tls: None,
            limits: Limits::default(),
        })
    }

    /// Serves HTTPS with `tls` instead of plain HTTP.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Replaces the default [`Limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves `router` on the current tokio runtime until `shutdown`
    /// resolves, then lets requests in flight finish.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] if the listener fails.
    pub async fn serve<F>(self, router: Router, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let router = with_limits(router, &self.limits);
        tracing::info!(target: "confsum_server", "listening on {}", self.url());
        self.listener.set_nonblocking(true).map_err(Error::Serve)?;
        let listener = tokio::net::TcpListener::from_std(self.listener).map_err(Error::Serve)?;
        match self.tls {
            None => axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(Error::Serve),
            Some(tls) => {
                let listener = TlsListener::new(listener, self.addr, TlsAcceptor::from(tls.config));
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(Error::Serve)
            }
        }
    }

    /// [`serve`](Self::serve) on a new multi-threaded tokio runtime,
    /// blocking the calling thread until the server stops.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] if the runtime cannot start or the listener fails.
    pub fn serve_blocking<F>(self, router: Router, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Error::Serve)?
            .block_on(self.serve(router, shutdown))
    }

    /// [`serve_blocking`](Self::serve_blocking) on a new thread, until the
    /// returned handle is stopped or dropped. For tests, benches and
    /// in-process demos that need a live server beside their own code.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] if the thread cannot be started.
    pub fn spawn(self, router: Router) -> Result<Spawned, Error> {
        let url = self.url();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("serve {}", self.addr))
            .spawn(move || {
                self.serve_blocking(router, async move {
                    // A dropped sender stops the server too.
                    let _ = stopped.await;
                })
            })
            .map_err(Error::Serve)?;
        Ok(Spawned {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A server running on its own thread, from [`Server::spawn`]. Dropping it
/// stops the server and waits for it; [`stop`](Self::stop) does the same
/// and says how it ended.
#[derive(Debug)]
pub struct Spawned {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl Spawned {
    /// `http://ADDR` or `https://ADDR`, as [`Server::url`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server, lets requests in flight finish, and returns what
    /// serving returned.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] if the listener failed or the server thread
    /// panicked.
    pub fn stop(mut self) -> Result<(), Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            // An error means the server has already stopped by itself.
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(Error::Serve(io::Error::other("the server thread panicked")))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the usual shutdown
/// future for [`Server::serve`]. If a signal handler cannot be installed,
/// only the other signal stops the server.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Accepts TCP connections and hands axum those whose TLS handshake
/// completed. Handshakes run in their own tasks, with a timeout, so that
/// a slow client cannot hold up the others.
struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: tokio::net::TcpListener, addr: SocketAddr, tls: TlsAcceptor) -> Self {
        let (sender, incoming) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_tls(listener, tls, sender));
        TlsListener {
            incoming,
            addr,
            acceptor,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_tls(
    listener: tokio::net::TcpListener,
    tls: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(connection) => connection,
            // Out of file descriptors and the like: wait, as axum does.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let tls = tls.clone();
        let handoff = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                let _ = handoff.send((stream, peer)).await;
            }
        });
        if sender.is_closed() {
            return;
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accepting task ended: serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
