//! TCP listeners and connections (RFC 3261 §18.2.2, §18.3; RFC 5626 §4.4.1).
//!
//! Each connection has a reader task (framing with [`StreamFramer`], answering CRLF
//! keep-alive pings with a single CRLF, closing after a framing error) and a writer task
//! fed by a bounded queue, so a slow peer cannot grow memory. Connections are bounded in
//! number, and one without inbound bytes for the idle timeout is closed. Requests to a
//! TCP target reuse an open connection to that address, or open one.

use super::{error_reply, ConnId, Inbound, InboundTx, Peer, Transport};
use crate::metrics;
use crate::txn::TxId;
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
    /// Messages waiting for a connection being opened, per target (bounded), with the
    /// transaction each belongs to.
    connecting: DashMap<SocketAddr, Vec<(Bytes, Option<TxId>)>>,
    /// Where transactions whose messages a failed connect dropped are reported
    /// (RFC 3261 §17.1.4: the transport error reaches the transaction).
    failures: std::sync::OnceLock<mpsc::UnboundedSender<TxId>>,
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
            connecting: DashMap::new(),
            failures: std::sync::OnceLock::new(),
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
        // Starts at 1 and a u64 counter does not wrap in the process's life.
        let id = ConnId(
            std::num::NonZeroU64::new(self.next_id.fetch_add(1, Ordering::Relaxed))
                .unwrap_or(std::num::NonZeroU64::MIN),
        );
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

    /// Reports to `tx` every transaction whose message a failed connect dropped (a
    /// connect is asynchronous: `send` has returned `true` by then).
    pub fn report_failures_to(&self, tx: mpsc::UnboundedSender<TxId>) {
        let _ = self.failures.set(tx);
    }

    /// Queues bytes for a peer: its connection if still open, else an open connection to
    /// its address, else a new connection.
    pub fn send(self: &Arc<Self>, peer: &Peer, bytes: Bytes) -> bool {
        self.send_for(peer, bytes, None)
    }

    /// [`TcpPool::send`] for transaction `tx`, which learns of a connect that fails.
    pub fn send_for(self: &Arc<Self>, peer: &Peer, bytes: Bytes, tx: Option<TxId>) -> bool {
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
        // A connect to this target is already under way: queue behind it.
        if let Some(mut waiting) = self.connecting.get_mut(&peer.addr) {
            if waiting.len() >= WRITE_QUEUE {
                return false;
            }
            waiting.push((bytes, tx));
            return true;
        }
        if !self.try_reserve() {
            metrics::tcp_connection_rejected();
            return false;
        }
        let pool = self.clone();
        let addr = peer.addr;
        self.connecting.insert(addr, vec![(bytes, tx)]);
        tokio::spawn(async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
            // Take the queue and register the connection with no await in between, so a
            // concurrent send either queued here or finds the new connection.
            let waiting = pool
                .connecting
                .remove(&addr)
                .map(|(_, q)| q)
                .unwrap_or_default();
            match connected {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let id = pool.clone().start(stream, addr);
                    let tx = pool.conns.get(&id).map(|c| c.tx.clone());
                    if let Some(tx) = tx {
                        for (b, _) in waiting {
                            let _ = tx.try_send(b);
                        }
                    }
                }
                _ => {
                    tracing::debug!(%addr, dropped = waiting.len(), "TCP connect failed");
                    pool.active.fetch_sub(1, Ordering::AcqRel);
                    if let Some(report) = pool.failures.get() {
                        for t in waiting.into_iter().filter_map(|(_, t)| t) {
                            let _ = report.send(t);
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn settings() -> TcpSettings {
        TcpSettings {
            max_connections: 4,
            idle_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }

    async fn read_exact_within(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("bytes within the deadline")
            .expect("read");
        buf
    }

    /// RFC 3261 §18.1.1 / §18.2.2: a request to a TCP target opens a connection when none
    /// is open, messages sent while it opens wait for it, and later ones reuse it.
    #[tokio::test]
    async fn send_opens_then_reuses_a_connection() {
        let (tx, _rx) = mpsc::channel(8);
        let pool = TcpPool::new(settings(), tx);
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = target.local_addr().unwrap();
        let peer = Peer {
            transport: Transport::Tcp,
            addr,
            conn: None,
        };
        assert!(pool.send(&peer, Bytes::from_static(b"one")));
        assert!(pool.send(&peer, Bytes::from_static(b"+")));
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(5), target.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_exact_within(&mut accepted, 4).await, b"one+");
        assert_eq!(pool.len(), 1);
        assert!(pool.send(&peer, Bytes::from_static(b"two")));
        assert_eq!(read_exact_within(&mut accepted, 3).await, b"two");
        // No second connection was opened.
        let second = tokio::time::timeout(Duration::from_millis(200), target.accept()).await;
        assert!(second.is_err(), "a second connection was opened");
        assert_eq!(pool.len(), 1);
    }

    /// The connection bound counts outbound connections too.
    #[tokio::test]
    async fn outbound_connections_respect_the_bound() {
        let (tx, _rx) = mpsc::channel(8);
        let pool = TcpPool::new(
            TcpSettings {
                max_connections: 1,
                ..settings()
            },
            tx,
        );
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pa = Peer {
            transport: Transport::Tcp,
            addr: a.local_addr().unwrap(),
            conn: None,
        };
        let pb = Peer {
            transport: Transport::Tcp,
            addr: b.local_addr().unwrap(),
            conn: None,
        };
        assert!(pool.send(&pa, Bytes::from_static(b"x")));
        let _ = tokio::time::timeout(Duration::from_secs(5), a.accept())
            .await
            .unwrap()
            .unwrap();
        assert!(!pool.send(&pb, Bytes::from_static(b"y")), "over the bound");
    }
}
