//! TCP listeners and connections (RFC 3261 §18.2.2, §18.3; RFC 5626 §4.4.1).
//!
//! Each connection has a reader task (framing with [`StreamFramer`], answering CRLF
//! keep-alive pings with a single CRLF, closing after a framing error) and a writer task
//! fed by a bounded queue, so a slow peer cannot grow memory. Connections are bounded in
//! number, and one without inbound bytes for the idle timeout is closed. Requests to a
//! TCP target reuse an open connection to that address, or open one.

use super::{error_reply, ConnId, Inbound, InboundTx, Peer, Transport};
use crate::metrics;
use crate::wire::{parse_message, Limits, Salvage, StreamFramer, StreamItem, WireError};
use bytes::Bytes;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Messages queued for one connection's writer before further ones are dropped.
const WRITE_QUEUE: usize = 256;
/// How long an outbound connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the pool.
#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    /// Most open connections, inbound and outbound together.
    pub max_connections: usize,
    /// Close a connection after this long without inbound bytes.
    pub idle_timeout: Duration,
    /// Framing limits.
    pub limits: Limits,
}

struct Conn {
    tx: mpsc::Sender<Bytes>,
    addr: SocketAddr,
}

/// Every open TCP connection.
pub struct TcpPool {
    settings: TcpSettings,
    conns: DashMap<ConnId, Conn>,
    by_addr: DashMap<SocketAddr, ConnId>,
    next_id: AtomicU64,
    active: AtomicUsize,
    inbound: InboundTx,
}

impl TcpPool {
    /// A pool delivering inbound messages to `inbound`.
    pub fn new(settings: TcpSettings, inbound: InboundTx) -> Arc<TcpPool> {
        Arc::new(TcpPool {
            settings,
            conns: DashMap::new(),
            by_addr: DashMap::new(),
            next_id: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            inbound,
        })
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accepts connections until the listener fails.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !self.try_reserve() {
                metrics::tcp_connection_rejected();
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.clone().start(stream, addr);
        }
    }

    fn try_reserve(&self) -> bool {
        let max = self.settings.max_connections;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, id: ConnId) {
        if let Some((_, conn)) = self.conns.remove(&id) {
            self.by_addr.remove_if(&conn.addr, |_, v| *v == id);
        }
        let n = self.active.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        metrics::tcp_connections_active(n);
    }

    /// Registers a connected stream (its slot already reserved) and starts its reader
    /// and writer.
    fn start(self: Arc<Self>, stream: TcpStream, addr: SocketAddr) -> ConnId {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.conns.insert(
            id,
            Conn {
                tx: tx.clone(),
                addr,
            },
        );
        self.by_addr.insert(addr, id);
        metrics::tcp_connections_active(self.len());
        let local = stream.local_addr().ok();
        let (read, write) = stream.into_split();
        tokio::spawn(writer(write, rx));
        let pool = self.clone();
        tokio::spawn(async move {
            pool.reader(read, id, addr, local, tx).await;
            pool.release(id);
        });
        id
    }

    async fn reader(
        &self,
        mut read: tokio::net::tcp::OwnedReadHalf,
        id: ConnId,
        addr: SocketAddr,
        local: Option<SocketAddr>,
        tx: mpsc::Sender<Bytes>,
    ) {
        let limits = self.settings.limits;
        let mut framer = StreamFramer::new();
        let mut buf = vec![0u8; 16 * 1024];
        let peer = Peer {
            transport: Transport::Tcp,
            addr,
            conn: Some(id),
        };
        let local = local.unwrap_or(addr);
        loop {
            let n =
                match tokio::time::timeout(self.settings.idle_timeout, read.read(&mut buf)).await {
                    Err(_) => {
                        tracing::debug!(%addr, "TCP connection idle, closing");
                        return;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => n,
                };
            framer.push(&buf[..n]);
            loop {
                match framer.next_item(&limits) {
                    Ok(None) => break,
                    Ok(Some(StreamItem::Ping)) => {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                    Ok(Some(StreamItem::Message { head, body })) => {
                        match parse_message(&head, &body) {
                            Ok(message) => {
                                if self
                                    .inbound
                                    .send(Inbound {
                                        peer,
                                        local,
                                        message,
                                    })
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Err(e) => {
                                if let Some(reply) = error_reply(&e, &Salvage::from_head(&head)) {
                                    let _ = tx.try_send(reply);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // After a framing error the next message's start is unknowable:
                        // answer if possible, then close (RFC 4475 §3.1.2.3, §3.3.9).
                        let salvage = Salvage::from_head(crate::wire::framing::salvage_head(
                            framer.buffer(),
                            &limits,
                        ));
                        if let Some(reply) = error_reply(&WireError::Frame(e), &salvage) {
                            let _ = tx.try_send(reply);
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Queues bytes for a peer: its connection if still open, else an open connection to
    /// its address, else a new connection.
    pub fn send(self: &Arc<Self>, peer: &Peer, bytes: Bytes) -> bool {
        let id = peer
            .conn
            .filter(|c| self.conns.contains_key(c))
            .or_else(|| self.by_addr.get(&peer.addr).map(|e| *e.value()));
        if let Some(id) = id {
            // Copy the sender out and drop the map guard before sending.
            let tx = self.conns.get(&id).map(|c| c.tx.clone());
            if let Some(tx) = tx {
                return tx.try_send(bytes).is_ok();
            }
        }
        if !self.try_reserve() {
            metrics::tcp_connection_rejected();
            return false;
        }
        let pool = self.clone();
        let addr = peer.addr;
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let id = pool.clone().start(stream, addr);
                    let tx = pool.conns.get(&id).map(|c| c.tx.clone());
                    if let Some(tx) = tx {
                        let _ = tx.try_send(bytes);
                    }
                }
                _ => {
                    tracing::debug!(%addr, "TCP connect failed");
                    pool.active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
        true
    }
}

async fn writer(mut write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if write.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}
