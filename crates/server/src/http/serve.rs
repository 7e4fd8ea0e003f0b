//! Our accept loop, for plain HTTP and TLS alike: `TCP_NODELAY` on every accepted socket,
//! connection limits (in total and per client IP), per-connection timeouts, HTTP/1.1 and
//! HTTP/2, and graceful shutdown.
//!
//! Why not `axum::serve`: it sets no `TCP_NODELAY`, so a Streamable HTTP response written in
//! several segments (SSE framing) met delayed ACKs, ~40 ms per response on a keep-alive
//! connection; and it has no timeouts or limits, so connections that send their request head
//! one byte at a time stayed open forever and a few hundred of them exhausted the file
//! descriptors (issue 6, items 2 and 15).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use mcp_oauth_core::security::connections::{
    ConnectionTimeouts, PeerAdmission, PerPeerConnections,
};

use super::connection::{Activity, ConnectionService, TimedIo};
use crate::config::{Cidr, Settings};

/// How long shutdown waits for requests in progress before closing their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// HTTP/2 streams at once per connection. RFC 9113 §6.5.2 recommends no fewer than 100.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 PING after this long without frames, and give up when it is not answered within
/// as long again: detects dead peers under long-lived SSE streams.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// What the accept loop needs from the settings.
pub struct ServeOptions {
    pub timeouts: ConnectionTimeouts,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Exempt from the per-IP limit.
    pub trusted_proxies: Vec<Cidr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ServeOptions {
    pub fn new(settings: &Settings, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self {
            timeouts: ConnectionTimeouts {
                header_read: settings.http.header_read_timeout(),
                keep_alive: settings.http.keep_alive_timeout(),
            },
            max_connections: settings.http.max_connections,
            max_connections_per_ip: settings.http.max_connections_per_ip,
            trusted_proxies: settings.trusted_proxies.clone(),
            tls,
        }
    }
}

/// Load a PEM certificate chain and private key for rustls, offering HTTP/2 and HTTP/1.1
/// by ALPN.
pub fn load_tls(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("cannot read a private key from {}", key_file.display()))?;
    // aws-lc-rs is the only rustls provider compiled in; name it rather than rely on a
    // process-wide default.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("the TLS provider offers no safe protocol version")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and the private key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `router` on `listener` until `shutdown` completes; then stop accepting, let requests
/// in progress finish for up to `SHUTDOWN_GRACE`, and close what remains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    warn_if_over_open_file_limit(options.max_connections);
    let builder = Arc::new(builder());
    let tls = options.tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let peers = Arc::new(Mutex::new(PerPeerConnections::new(
        options.max_connections_per_ip,
    )));
    let graceful = GracefulShutdown::new();
    let force_close = CancellationToken::new();
    tokio::pin!(shutdown);

    loop {
        // At the limit, stop accepting: new connections wait in the kernel's backlog until
        // one closes, and the timeouts make sure one does.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Typically EMFILE: out of file descriptors. Accepting again at once
                    // would spin; existing connections closing is what helps.
                    tracing::error!(
                        error = %e,
                        "accepting a connection failed; retrying in 1 s (at the open-file limit, lower http.max_connections or raise the limit)"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let exempt = options
            .trusted_proxies
            .iter()
            .any(|proxy| proxy.contains(peer.ip()));
        let Some(peer_slot) = PeerSlot::admit(&peers, peer.ip(), exempt) else {
            tracing::debug!(
                peer = ?peer.ip(),
                "connection closed: http.max_connections_per_ip reached for this address"
            );
            drop(stream);
            continue;
        };
        // Responses are written in several segments (headers, SSE events); with Nagle's
        // algorithm each later segment waits for the client's delayed ACK (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            router: router.clone(),
            builder: builder.clone(),
            peer,
            timeouts: options.timeouts,
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        let force_close = force_close.clone();
        tokio::spawn(async move {
            let _held = (slot, peer_slot);
            tokio::select! {
                () = connection.run(stream, tls) => {}
                () = force_close.cancelled() => {}
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in progress {} s after shutdown began; closing their connections",
            SHUTDOWN_GRACE.as_secs()
        );
        force_close.cancel();
    }
}

fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // Our own deadlines apply instead (see `connection`); hyper's would also cut idle
    // keep-alive connections at the header timeout.
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}

/// One accepted connection, before and after its TLS handshake.
struct Connection {
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    peer: SocketAddr,
    timeouts: ConnectionTimeouts,
    watcher: Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(stream).await,
            Some(acceptor) => {
                // The handshake gets the header timeout: it is the first part of the
                // request's head, and a client that stalls in it holds a connection too.
                match tokio::time::timeout(self.timeouts.header_read, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => self.serve(stream).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = ?self.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::debug!(peer = ?self.peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new(self.timeouts);
        let io = TokioIo::new(TimedIo::new(io, activity.clone()));
        let service = ConnectionService::new(self.router, self.peer, activity);
        let connection = self.builder.serve_connection(io, service);
        if let Err(e) = self.watcher.watch(connection).await {
            // Timeouts, resets and malformed requests: the client's doing, not ours.
            tracing::debug!(peer = ?self.peer, error = %e, "connection ended with an error");
        }
    }
}

/// A connection counted against its peer's limit, released when dropped.
struct PeerSlot {
    peers: Arc<Mutex<PerPeerConnections>>,
    key: Option<IpAddr>,
}

impl PeerSlot {
    fn admit(peers: &Arc<Mutex<PerPeerConnections>>, ip: IpAddr, exempt: bool) -> Option<Self> {
        let admission = peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(ip, exempt);
        let key = match admission {
            PeerAdmission::Counted(key) => Some(key),
            PeerAdmission::Exempt => None,
            PeerAdmission::Refused => return None,
        };
        Some(Self {
            peers: peers.clone(),
            key,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .release(key);
        }
    }
}

/// Errors about one connection that went away before we accepted it: accept the next.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Each connection holds a file descriptor; past the process's limit `accept` fails and
/// nobody is served. Linux only (where `/proc/self/limits` tells the soft limit).
fn warn_if_over_open_file_limit(max_connections: usize) {
    // Database connections, log files, the listener and TLS certificates need some too.
    const RESERVED: u64 = 64;
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| soft_open_file_limit(&limits))
    else {
        return;
    };
    if max_connections as u64 + RESERVED > limit {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "http.max_connections is above what the open-file limit allows (less {RESERVED} for the database and files): lower it, or raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit)"
        );
    }
}

/// The soft "Max open files" limit from `/proc/self/limits`; `None` when unlimited.
fn soft_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127588               127588               processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_file_limit(limits), Some(1024));
        assert_eq!(
            soft_open_file_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(soft_open_file_limit(""), None);
    }
}
