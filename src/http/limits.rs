//! Connection-level limits for the HTTP server: at most `http.max_connections` TCP connections
//! at once (more wait in the listen backlog), at most `http.max_connections_per_peer` from one
//! client address (more are closed at once), a connection with nothing read or written for
//! `http.idle_timeout_ms` is closed, and so is one whose request is not answered within
//! `http.request_read_timeout_ms` of its first byte (a client sending its headers a line every
//! few seconds). Request-level limits (body size, request timeout, concurrency) are tower layers
//! in `router`; these cover what happens before and between requests.

use axum::serve::Listener;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits a listener enforces.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max: usize,
    pub per_peer: usize,
    pub idle: Duration,
    pub request: Duration,
}

/// A listener that hands out at most `max` connections at once, `per_peer` from one address.
pub struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    bounds: Bounds,
}

impl Limited {
    pub fn new(inner: TcpListener, bounds: Bounds) -> Limited {
        Limited {
            inner,
            permits: Arc::new(Semaphore::new(bounds.max)),
            peers: Arc::default(),
            bounds,
        }
    }

    /// Counts a connection from `ip`, unless that address holds `per_peer` already.
    fn admit(&self, ip: IpAddr) -> Option<PeerSlot> {
        let mut peers = self.peers.lock().ok()?;
        let n = peers.entry(ip).or_insert(0);
        if *n >= self.bounds.per_peer {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            ip,
            peers: Arc::clone(&self.peers),
        })
    }
}

/// One connection's place in its address's count, given back when the connection closes.
struct PeerSlot {
    ip: IpAddr,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.peers.lock() {
            if let Some(n) = peers.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    peers.remove(&self.ip);
                }
            }
        }
    }
}

impl Listener for Limited {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        // Wait for a free slot before accepting: excess clients stay in the kernel backlog.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let Some(peer) = self.admit(addr.ip()) else {
                        // Over its address's share: closed at once, the slot kept for others.
                        tracing::debug!(peer = %addr.ip(), "connection refused: http.max_connections_per_peer reached");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = Conn {
                        stream,
                        _permit: permit,
                        _peer: peer,
                        idle: self.bounds.idle,
                        deadline: Box::pin(tokio::time::sleep(self.bounds.idle)),
                        request: self.bounds.request,
                        answer_by: None,
                    };
                    return (conn, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: holds its slots until dropped, and fails with `TimedOut` once
/// nothing has moved in either direction for the idle timeout, or once a request has waited for
/// its answer longer than the request read timeout since its first byte.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _peer: PeerSlot,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    request: Duration,
    /// Armed by the first byte read after an answer (or the connection's start), disarmed by
    /// the next bytes written.
    answer_by: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
            || self
                .answer_by
                .as_mut()
                .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }

    /// A write's result: bytes out count as activity; a write stuck past the idle timeout
    /// (a client that stopped reading) fails.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                    self.answer_by = None;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.idle_expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle")
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                    if self.answer_by.is_none() {
                        self.answer_by = Some(Box::pin(tokio::time::sleep(self.request)));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.idle_expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, data);
        self.wrote(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
