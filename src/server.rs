//! Starting and stopping the whole switch: bind every listener, start the transport
//! readers, the driver and the HTTP server, and drain on shutdown. `main` calls only this.

use crate::auth::{Algorithm, AuthConfig, Authenticator};
use crate::call::controller::CallSettings;
use crate::call::router::CallRouter;
use crate::call::CallHub;
use crate::config::Config;
use crate::directory::Directory;
use crate::driver::{Control, Driver, DriverSettings, TransactionUsers};
use crate::endpoint::Endpoint;
use crate::http::{self, ApiSource, HttpState};
use crate::registrar::{self, GaugeObserver, Registrar};
use crate::transport::tcp::{TcpPool, TcpSettings};
use crate::transport::{udp, Transport, Transports};
use crate::txn::{TimerConfig, TxLayer};
use crate::wire::Limits;
use crate::wire::Uri;
use metrics_exporter_prometheus::PrometheusHandle;
use softswitch_actors::call::CallTimers;
use softswitch_actors::journal::{Journal, JournalConfig};
use softswitch_actors::location::Location;
use softswitch_actors::port::Policy;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Inbound messages queued between the transport readers and the driver.
const INBOUND_QUEUE: usize = 4096;

/// A started switch.
pub struct Running {
    /// Bound UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// Bound TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// The bound HTTP listener.
    pub http: SocketAddr,
    control: Control,
    http_state: Arc<HttpState>,
    driver: JoinHandle<()>,
}

/// The framing limits a configuration sets.
pub fn limits(config: &Config) -> Limits {
    Limits {
        max_message_bytes: config.limits.max_message_bytes,
        max_headers: config.limits.max_headers,
        max_header_line_bytes: config.limits.max_header_line_bytes,
        max_body_bytes: config.limits.max_body_bytes,
    }
}

/// Binds every listener and starts serving. Must run inside a tokio runtime (actix-rt's).
pub async fn start(config: &Config, metrics: PrometheusHandle) -> io::Result<Running> {
    let limits = limits(config);
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    let tcp_pool = TcpPool::new(
        TcpSettings {
            max_connections: config.sip.tcp_max_connections,
            idle_timeout: config.sip.tcp_idle_timeout(),
            limits,
        },
        tx.clone(),
    );
    let mut udp_socks = Vec::new();
    let mut udp_addrs = Vec::new();
    let mut tcp_addrs = Vec::new();
    for spec in &config.sip.listen {
        match spec.transport {
            Transport::Udp => {
                let sock = Arc::new(
                    tokio::net::UdpSocket::bind(spec.addr)
                        .await
                        .map_err(|e| bind_error(spec.addr, e))?,
                );
                size_udp_buffers(&sock, config.sip.udp_buffer_bytes);
                udp_addrs.push(sock.local_addr()?);
                udp_socks.push(sock);
            }
            Transport::Tcp => {
                let l = tokio::net::TcpListener::bind(spec.addr)
                    .await
                    .map_err(|e| bind_error(spec.addr, e))?;
                tcp_addrs.push(l.local_addr()?);
                tokio::spawn(tcp_pool.clone().accept_loop(l));
            }
        }
    }
    let (unreachable_tx, unreachable_rx) = mpsc::channel(1024);
    for sock in &udp_socks {
        if let Err(e) = udp::enable_icmp_errors(sock) {
            tracing::warn!(error = %e, "cannot enable ICMP errors on a UDP socket");
        }
        tokio::spawn(udp::run(
            sock.clone(),
            limits,
            tx.clone(),
            unreachable_tx.clone(),
        ));
    }
    drop(tx);
    let all_users = config.users_or_demo()?;
    let directory = Directory::new(&all_users, &config.sip.domain)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let endpoint = Arc::new(Endpoint {
        domain: config.sip.domain.clone(),
        local: udp_addrs.iter().chain(tcp_addrs.iter()).copied().collect(),
        advertised: config.sip.advertised_host.clone(),
        draining: Arc::new(AtomicBool::new(false)),
        tag_key: Default::default(),
    });
    let (failures_tx, failures_rx) = mpsc::unbounded_channel();
    tcp_pool.report_failures_to(failures_tx);
    let transports = Arc::new(Transports::new(udp_socks, tcp_pool, unreachable_tx));
    let mut layer = TxLayer::new(TimerConfig {
        t1: config.sip.t1(),
        t2: config.sip.t2(),
        t4: config.sip.t4(),
    });
    layer.set_capacity(config.limits.max_transactions);
    crate::metrics::transactions_capacity(config.limits.max_transactions);
    tracing::info!(
        max_transactions = config.limits.max_transactions,
        memory_limit_mib = crate::mem::memory_limit() >> 20,
        "transaction table bound (limits.max_transactions)"
    );
    let location = start_location(config)?;
    let (completions_tx, completions_rx) = mpsc::unbounded_channel();
    let directory = Arc::new(directory);
    let auth = Arc::new(authenticator(config));
    let registrar = Registrar::new(
        endpoint.clone(),
        directory.clone(),
        auth.clone(),
        location.clone(),
        completions_tx,
    );
    let udp_us = our_address(config, udp_addrs.first().copied());
    let tcp_us = our_address(config, tcp_addrs.first().copied());
    let callees = Arc::new(crate::call::forward::Callees::new(
        directory.clone(),
        location.clone(),
        &config.sip.domain,
        config.sip.no_answer_timeout(),
    ));
    let router = CallRouter::new(
        endpoint.clone(),
        directory,
        auth,
        location.clone(),
        vec![udp_us.clone(), tcp_us.clone()],
        callees.clone(),
        config.sip.session_policy(),
    );
    if config.sip.min_se_s < crate::call::session_timer::RFC_MIN_SE {
        // Only builds with debug assertions get here (`SipConfig::min_se_s`).
        tracing::warn!(
            min_se_s = config.sip.min_se_s,
            "sip.min_se_s below RFC 4028's 90 s: a test build's short session timers"
        );
    }
    let t1 = config.sip.t1();
    let calls_registry = Arc::new(dashmap::DashMap::new());
    let billing = open_billing(config)?;
    let billing_counters = billing.counters();
    let (call_out, call_outputs) = tokio::sync::mpsc::unbounded_channel();
    let calls = CallHub::new(
        router,
        CallSettings {
            udp: udp_us,
            tcp: tcp_us,
            timers: std::sync::Arc::new(CallTimers {
                ring: config.sip.no_answer_timeout(),
                ack_wait: t1 * 64,
                bye_wait: t1 * 64,
            }),
            t1,
            t2: config.sip.t2(),
            session: config.sip.session_policy(),
            billing,
            domain: config.sip.domain.clone(),
            registry: calls_registry.clone(),
            out: call_out,
            callees,
        },
    );
    let driver = Driver::new(
        layer,
        transports,
        endpoint,
        rx,
        DriverSettings {
            drain_timeout: config.sip.drain_timeout(),
            force_rport: config.sip.force_rport,
        },
        TransactionUsers {
            registrar,
            completions: completions_rx,
            calls,
            call_outputs,
            transport_failures: failures_rx,
            udp_unreachable: unreachable_rx,
        },
    );
    let control = driver.control();
    // On the System's own thread (actix-rt's LocalSet): the driver starts actors.
    let driver = actix_rt::spawn(driver.run());

    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| bind_error(config.http.listen, e))?;
    let http_addr = http_listener.local_addr()?;
    let http_state = Arc::new(
        HttpState::new(
            metrics,
            Arc::new(Api {
                location,
                calls: calls_registry,
            }),
        )
        .with_billing(billing_counters),
    );
    tokio::spawn(http::serve(http_listener, http_state.clone()));
    http_state.set_ready();
    Ok(Running {
        udp: udp_addrs,
        tcp: tcp_addrs,
        http: http_addr,
        control,
        http_state,
        driver,
    })
}

/// Our host and port in Via and Contact: `sip.advertised_host` when set (behind NAT, in a
/// container), else the listener's address, else (a listener on an unspecified address)
/// the served domain at the listener's port.
fn our_address(config: &Config, listener: Option<SocketAddr>) -> crate::wire::HostPort {
    use crate::wire::{Host, HostPort};
    let port = listener.map(|a| a.port());
    if let Some(a) = &config.sip.advertised_host {
        if let Ok(Uri::Sip(u)) = crate::wire::parse_uri(&format!("sip:{a}")) {
            return HostPort {
                host: u.host.host,
                port: u.host.port.or(port),
            };
        }
    }
    match listener {
        Some(a) if !a.ip().is_unspecified() => HostPort {
            host: match a.ip() {
                std::net::IpAddr::V4(v) => Host::V4(v),
                std::net::IpAddr::V6(v) => Host::V6(v),
            },
            port,
        },
        _ => HostPort {
            host: Host::Name(config.sip.domain.clone()),
            port,
        },
    }
}

/// Opens the CDR file (locking it, recovering a torn last line) and starts its writer
/// thread. A file another process holds (a second switch on the same files) is an error
/// that names the file: `main` prints it and exits non-zero.
fn open_billing(config: &Config) -> io::Result<softswitch_actors::billing::BillingHandle> {
    let path = &config.billing.cdr_path;
    let (billing, recovered) =
        softswitch_actors::billing::BillingHandle::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("billing.cdr_path {}: {e}", path.display()),
            )
        })?;
    tracing::info!(
        records = recovered.records,
        torn_bytes = recovered.torn_bytes,
        "CDR file opened"
    );
    Ok(billing)
}

/// Opens the binding journal and rebuilds every AOR that has not expired.
fn start_location(config: &Config) -> io::Result<Location> {
    let r = &config.registrar;
    let mut jc = JournalConfig::new(&r.store_path);
    jc.sync = r.store_sync;
    let (journal, recovered) = Journal::open(jc).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("registrar.store_path {}: {e}", r.store_path.display()),
        )
    })?;
    let location = Location::new(
        Arc::new(journal),
        Policy {
            default_expires: r.default_expires_s,
            min_expires: r.min_expires_s,
            max_expires: r.max_expires_s,
            max_contacts: r.max_contacts,
        },
        r.mailbox_capacity,
        Arc::new(GaugeObserver),
    );
    location.start_sweeper();
    let torn = recovered.torn_bytes;
    let restored = location.restore(recovered.entries, softswitch_actors::registrar::now_ms());
    tracing::info!(
        aors = restored.aors,
        bindings = restored.bindings,
        expired = restored.expired,
        undecodable = restored.undecodable,
        torn_bytes = torn,
        "registrations restored"
    );
    Ok(location)
}

/// The digest authenticator `[auth]` describes, with a fresh random nonce secret (nonces
/// from before a restart are answered with a new challenge).
fn authenticator(config: &Config) -> Authenticator {
    let a = &config.auth;
    let algorithms = a
        .algorithms
        .iter()
        .filter_map(|s| s.parse::<Algorithm>().ok())
        .collect();
    Authenticator::new(
        AuthConfig {
            algorithms,
            nonce_lifetime: std::time::Duration::from_secs(a.nonce_lifetime_s),
            max_failures: a.max_failures,
            failure_window: std::time::Duration::from_secs(a.failure_window_s),
            block: std::time::Duration::from_secs(a.block_s),
            max_tracked_nonces: a.max_tracked_nonces,
            ..AuthConfig::default()
        },
        rand::random(),
    )
}

/// The HTTP API's view of the switch.
struct Api {
    location: Location,
    calls: Arc<dashmap::DashMap<crate::call::CallNo, Box<crate::call::CallView>>>,
}

impl ApiSource for Api {
    fn registrations(&self) -> serde_json::Value {
        registrar::api_registrations(&self.location, std::time::SystemTime::now())
    }
    fn calls(&self) -> Vec<u8> {
        // Sorted by call number (start order); each call is serialized under its shard's
        // read lock only, straight into the body.
        let mut keys: Vec<crate::call::CallNo> = self.calls.iter().map(|e| *e.key()).collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(2 + keys.len() * 400);
        out.push(b'[');
        for k in keys {
            let Some(view) = self.calls.get(&k) else {
                continue; // ended meanwhile
            };
            let before = out.len();
            if before > 1 {
                out.push(b',');
            }
            if serde_json::to_writer(&mut out, &*view).is_err() {
                out.truncate(before); // cannot happen (string keys only); keep it valid
            }
        }
        out.push(b']');
        out
    }
}

/// Asks for `bytes` of UDP receive and send buffer (the kernel caps it at
/// `net.core.rmem_max`/`wmem_max`). The default 208 KiB holds about 500 REGISTERs: a burst
/// of a few thousand phones re-registering at once overflows it and every dropped
/// datagram costs a 500 ms retransmission.
fn size_udp_buffers(sock: &tokio::net::UdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(sock);
    if let Err(e) = s.set_recv_buffer_size(bytes) {
        tracing::warn!(error = %e, "cannot size the UDP receive buffer");
    }
    if let Err(e) = s.set_send_buffer_size(bytes) {
        tracing::warn!(error = %e, "cannot size the UDP send buffer");
    }
    tracing::debug!(
        recv = s.recv_buffer_size().unwrap_or(0),
        send = s.send_buffer_size().unwrap_or(0),
        "UDP buffers"
    );
}

fn bind_error(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))
}

impl Running {
    /// Drains: readiness turns 503, new INVITEs get 503 + Retry-After, and this returns
    /// once every transaction has ended or the drain deadline has passed.
    pub async fn shutdown(self) {
        self.http_state.set_draining();
        self.control.drain();
        let _ = self.driver.await;
    }
}
