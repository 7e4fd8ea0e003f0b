//! One connection's timeouts, enforced where they can be: the socket wrapper fails a read
//! that waits past the deadline (which closes the connection), and the service wrapper tells
//! it when requests start and end. The deadline itself is decided by
//! `mcp_oauth_core::security::connections::ConnectionState`.
//!
//! hyper's own `header_read_timeout` is not used: it arms whenever hyper waits for a request
//! head, idle keep-alive time included, so it cannot tell "idle" from "slow head", and it does
//! nothing for HTTP/2.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, Version};
use futures::task::AtomicWaker;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use mcp_oauth_core::security::connections::{ConnectionState, ConnectionTimeouts};

/// What the socket and the service of one connection share.
pub struct Activity {
    state: Mutex<ConnectionState>,
    /// The connection task, woken when the deadline may have moved (a request ended).
    reader: AtomicWaker,
    accepted: Instant,
    timeouts: ConnectionTimeouts,
}

impl Activity {
    pub fn new(timeouts: ConnectionTimeouts) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ConnectionState::accepted(Duration::ZERO)),
            reader: AtomicWaker::new(),
            accepted: Instant::now(),
            timeouts,
        })
    }

    fn state(&self) -> MutexGuard<'_, ConnectionState> {
        // The state is a few plain fields, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn request_started(self: &Arc<Self>, multiplexed: bool) -> RequestGuard {
        self.state().request_started(multiplexed);
        RequestGuard(self.clone())
    }
}

/// Held while a request is in progress, until its response body is dropped.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.0.accepted.elapsed();
        self.0.state().request_finished(now);
        // The connection may be waiting in a read with no deadline armed: let it arm one.
        self.0.reader.wake();
    }
}

/// A socket (plain or TLS) whose reads fail with `TimedOut` once the connection has waited
/// for its peer past the deadline; hyper then closes it.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed_for: Option<Duration>,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            sleep: None,
            armed_for: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = this.activity.accepted.elapsed();
                    let mut state = this.activity.state();
                    state.bytes_received(now);
                    // A peer that never pauses would never meet the check below; a head
                    // streamed without end is still a head that is late.
                    if state
                        .deadline(&this.activity.timeouts)
                        .is_some_and(|deadline| deadline <= now)
                    {
                        return Poll::Ready(Err(timed_out()));
                    }
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Waiting for the peer. Register before reading the deadline, so that a request
        // ending in between wakes us to look again.
        this.activity.reader.register(cx.waker());
        let Some(deadline) = this.activity.state().deadline(&this.activity.timeouts) else {
            return Poll::Pending;
        };
        let at = this.activity.accepted + deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if this.armed_for != Some(deadline) {
            sleep.as_mut().reset(at);
            this.armed_for = Some(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client sent no complete request in time",
    )
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: adds `ConnectInfo<SocketAddr>` (what
/// `into_make_service_with_connect_info` gave handlers) and tracks requests in progress.
#[derive(Clone)]
pub struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl ConnectionService {
    pub fn new(router: Router, peer: SocketAddr, activity: Arc<Activity>) -> Self {
        Self {
            router,
            peer,
            activity,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let guard = self
            .activity
            .request_started(request.version() == Version::HTTP_2);
        let response = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that ends its request's "in progress" when hyper drops it: after the last
/// byte is written, or when the client goes away. An open SSE stream keeps it in progress.
pub struct TrackedBody {
    body: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
