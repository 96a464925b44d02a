//! How the sidecar's HTTP port is served: at most `max_connections` at once
//! (more are answered 503 and closed at once, so they hold no descriptor),
//! and every connection bounded in time — its request headers must arrive
//! within the header timeout, a request must be read and answered within the
//! request timeout, and a connection that moves no byte for the idle timeout
//! is closed. Slow or idle HTTP clients therefore cannot pile up: the RESP
//! port's clients keep their own descriptor budget (see `fd_budget`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::SidecarMetrics;

/// The HTTP listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; more are refused.
    pub max_connections: usize,
    /// From the first byte a request needs (or the connection's start) to
    /// the end of its headers.
    pub header_timeout: Duration,
    /// No byte read or written for this long closes the connection.
    pub idle_timeout: Duration,
    /// Reading a request's body and answering it.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What a refused connection is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
    Content-Length: 26\r\nConnection: close\r\nRetry-After: 1\r\n\r\n\
    too many HTTP connections\n";
/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `router` on `listener` within `limits` until `shutdown`; then let
/// open connections finish (up to [`DRAIN_TIMEOUT`]) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
) {
    let dropped = |reason: &str| metrics.http_dropped.with_label_values(&[reason]);
    let counters = Counters {
        header_timeout: dropped("header_timeout"),
        idle_timeout: dropped("idle_timeout"),
    };
    let refused = dropped("max_connections");
    let router = router.layer(axum::middleware::from_fn({
        let timeouts = dropped("request_timeout");
        let limit = limits.request_timeout;
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let timeouts = timeouts.clone();
            async move {
                match tokio::time::timeout(limit, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        timeouts.inc();
                        (
                            StatusCode::REQUEST_TIMEOUT,
                            [(header::CONNECTION, "close")],
                            format!(
                                "the request was not read and answered within {}s (--http-request-timeout-secs)\n",
                                limit.as_secs()
                            ),
                        )
                            .into_response()
                    }
                }
            }
        }
    }));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off, do not spin.
                warn!(%error, "accepting an HTTP connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.inc();
            debug!(%peer, max = limits.max_connections, "refusing an HTTP connection: too many open");
            // A fresh socket's send buffer takes this without blocking.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let gauge = metrics.http_connections.clone();
        let router = router.clone();
        let counters = counters.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            gauge.inc();
            serve_connection(stream, router, limits, &counters, shutdown).await;
            gauge.dec();
            drop(slot);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
}

#[derive(Clone)]
struct Counters {
    header_timeout: IntCounter,
    idle_timeout: IntCounter,
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: HttpLimits,
    counters: &Counters,
    shutdown: CancellationToken,
) {
    let idled = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout, idled.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // hyper may end an idle connection's failed read without an error, so
    // the idle flag is looked at first.
    if idled.load(Ordering::Relaxed) {
        counters.idle_timeout.inc();
        debug!("HTTP connection closed: idle");
    } else if let Err(error) = result {
        if error.is_timeout() {
            counters.header_timeout.inc();
            debug!(%error, "HTTP connection closed: request headers too slow");
        } else {
            debug!(%error, "HTTP connection ended");
        }
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way for
/// `timeout` while a read or write waits.
struct IdleTimeout {
    inner: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    fired: Arc<AtomicBool>,
}

impl IdleTimeout {
    fn new(inner: TcpStream, timeout: Duration, fired: Arc<AtomicBool>) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            fired,
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// While an operation waits: has the idle time run out?
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.fired.store(true, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "HTTP connection idle too long")
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    this.moved();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(error) => Poll::Ready(error),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
