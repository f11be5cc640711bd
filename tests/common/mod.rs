//! Test helpers: start the real `softswitch` binary on loopback and talk to it.
//!
//! The binary prints one line per bound listener on stdout (`listening udp ADDR`,
//! `listening tcp ADDR`, `listening http ADDR`) and then `ready`; [`Switch::start`]
//! waits for those lines with a deadline, so no test sleeps to synchronise.
#![allow(dead_code)]

pub mod baresip;
pub mod digest;
pub mod ua;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the switch may take to start.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long to wait for an answer.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(3);

/// The two users of the SIPp scenarios' injection files (`u0001`/`p0001` calls
/// `u0002`/`p0002`), as `[[users]]` TOML for [`Switch::start_with_config`]. `u0002`
/// has call waiting: the load tests ring it with many calls at once, which busy
/// treatment would answer 486.
pub const SIPP_USERS: &str = r#"
[[users]]
user = "u0001"
password = "p0001"

[[users]]
user = "u0002"
password = "p0002"
call_waiting = true
"#;

/// A running switch.
pub struct Switch {
    child: Child,
    /// UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// Its data directory.
    pub dir: PathBuf,
    lines: mpsc::Receiver<String>,
    /// Leave `dir` in place on drop (a restarted switch takes it over).
    keep_dir: bool,
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "softswitch-test-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A random number: each `RandomState` is freshly keyed.
fn rand_suffix() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

impl Switch {
    /// Starts the switch on 127.0.0.1 with ephemeral ports and extra env overrides.
    pub fn start(env: &[(&str, &str)]) -> Switch {
        Switch::start_on("127.0.0.1", env)
    }

    /// Starts the switch listening on `host` (e.g. `127.0.0.1` or `[::1]`).
    pub fn start_on(host: &str, env: &[(&str, &str)]) -> Switch {
        Switch::start_in(temp_dir("sw"), host, env)
    }

    /// [`Switch::start_on`] with `dir` as its working and data directory, e.g. the
    /// directory of a switch stopped with [`Switch::stop_keeping_dir`], so the new
    /// process finds the old one's journal (`data/registrations.journal`).
    pub fn start_in(dir: PathBuf, host: &str, env: &[(&str, &str)]) -> Switch {
        Switch::start_in_with_args(dir, host, &[], env)
    }

    /// [`Switch::start_on`] with a configuration file holding `toml_text`, written into
    /// the fresh working directory as `softswitch.toml` and passed with `--config`; the
    /// listener, domain and CDR overrides of [`Switch::start_on`] still apply.
    pub fn start_with_config(host: &str, toml_text: &str, env: &[(&str, &str)]) -> Switch {
        let dir = temp_dir("sw");
        let file = dir.join("softswitch.toml");
        std::fs::write(&file, toml_text).expect("write config");
        let file = file.to_str().expect("utf-8 temp path").to_string();
        Switch::start_in_with_args(dir, host, &["--config", &file], env)
    }

    /// [`Switch::start`] with the switch's log (stderr) written to `stderr.log` in its
    /// directory instead of the test's stderr, for tests that read the log.
    pub fn start_logged(env: &[(&str, &str)]) -> Switch {
        let dir = temp_dir("sw");
        let log = std::fs::File::create(dir.join("stderr.log")).expect("create stderr.log");
        let mut all = Switch::base_env(&dir, "127.0.0.1");
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Switch::spawn(Switch::command(&[], &env, &dir, Stdio::from(log)), dir)
    }

    /// The environment [`Switch::start`] gives a switch whose data directory is `dir`
    /// (loopback listeners on ephemeral ports, the test domain, the CDR file in `dir`).
    pub fn env_for(dir: &std::path::Path) -> Vec<(String, String)> {
        Switch::base_env(dir, "127.0.0.1")
    }

    /// The switch's log so far (only for [`Switch::start_logged`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn base_env(dir: &std::path::Path, host: &str) -> Vec<(String, String)> {
        let cdr = dir.join("cdr.jsonl");
        vec![
            (
                "SOFTSWITCH_SIP_LISTEN".into(),
                format!("udp:{host}:0,tcp:{host}:0"),
            ),
            ("SOFTSWITCH_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            ("SOFTSWITCH_SIP_DOMAIN".into(), "example.test".into()),
            (
                "SOFTSWITCH_BILLING_CDR_PATH".into(),
                cdr.to_str().expect("utf-8 temp path").into(),
            ),
            ("SOFTSWITCH_LOG_LEVEL".into(), "warn".into()),
        ]
    }

    fn start_in_with_args(dir: PathBuf, host: &str, args: &[&str], env: &[(&str, &str)]) -> Switch {
        let mut all = Switch::base_env(&dir, host);
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Switch::start_with_args(args, &env, dir)
    }

    /// Starts the switch with command-line `args` (e.g. `--config FILE`) and only the
    /// given environment (plus PATH): no listener, domain or CDR overrides, so a
    /// configuration file decides them. `dir` becomes its working and data directory.
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)], dir: PathBuf) -> Switch {
        let cmd = Switch::command(args, env, &dir, Stdio::inherit());
        Switch::spawn(cmd, dir)
    }

    fn command(
        args: &[&str],
        env: &[(&str, &str)],
        dir: &std::path::Path,
        stderr: Stdio,
    ) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_softswitch"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(mut cmd: Command, dir: PathBuf) -> Switch {
        let mut child = cmd.spawn().expect("spawn softswitch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sw = Switch {
            child,
            udp: vec![],
            tcp: vec![],
            http: "127.0.0.1:0".parse().unwrap(),
            dir,
            lines: rx,
            keep_dir: false,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = sw
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("switch not ready within {START_DEADLINE:?}"));
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["listening", "udp", a] => sw.udp.push(a.parse().expect("udp addr")),
                ["listening", "tcp", a] => sw.tcp.push(a.parse().expect("tcp addr")),
                ["listening", "http", a] => sw.http = a.parse().expect("http addr"),
                ["ready"] => break,
                _ => {}
            }
        }
        sw
    }

    /// The first UDP listener.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp[0]
    }

    /// The first TCP listener.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp[0]
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status, with a deadline.
    pub fn terminate(mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the process with `sig` (`TERM`, or `KILL` for a crash), waits for it to exit
    /// within `deadline`, and hands back its working directory, left in place for
    /// [`Switch::start_in`]. Returns the exit status (`None`: still running at the
    /// deadline; it is killed then).
    pub fn stop_keeping_dir(
        mut self,
        sig: &str,
        deadline: Duration,
    ) -> (Option<std::process::ExitStatus>, PathBuf) {
        self.keep_dir = true;
        self.signal(sig);
        let status = self.wait_exit(deadline);
        (status, self.dir.clone())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`TERM`, `INT`) without waiting.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(st.is_ok_and(|s| s.success()), "kill -{sig} failed");
    }

    /// Waits for the process to exit, with a deadline (polling `try_wait`).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `host:port` as written in a SIP URI or Via sent-by (IPv6 in brackets).
pub fn host_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A request with the mandatory headers, a Via of `transport` and `sent_by`, the
/// given extra header lines (each without CRLF) and body (Content-Length set to it).
/// `Max-Forwards: 70` is added unless `extra` sets Max-Forwards itself.
#[allow(clippy::too_many_arguments)]
pub fn sip_request(
    method: &str,
    ruri: &str,
    transport: &str,
    sent_by: &str,
    via_params: &str,
    branch: &str,
    cseq: u32,
    extra: &[&str],
    body: &str,
) -> String {
    let mf = if extra
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("max-forwards:"))
    {
        ""
    } else {
        "Max-Forwards: 70\r\n"
    };
    let mut s = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{transport} {sent_by};branch=z9hG4bK{branch}{via_params}\r\n{mf}From: <sip:probe@example.test>;tag=f{branch}\r\nTo: <{ruri}>\r\nCall-ID: {branch}@client\r\nCSeq: {cseq} {method}\r\n"
    );
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

/// The value of one Prometheus series (`name{labels}` exactly as rendered, or a bare
/// name) in a `/metrics` body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Writes `dir/softswitch.toml` for a switch that real phones on loopback use: SIP on
/// `listen` (a TOML array, e.g. `["udp:127.0.0.1:0"]`), domain `127.0.0.1` (phones
/// address the switch by IP), HTTP on an ephemeral loopback port, the CDR file and the
/// binding journal in `dir`, log level warn; `registrar` is added to `[registrar]`,
/// `rest` (more sections, `[[users]]`) at the end. Returns the file's path.
pub fn phone_config(dir: &std::path::Path, listen: &str, registrar: &str, rest: &str) -> String {
    let path = dir.join("softswitch.toml");
    let toml = format!(
        "[sip]\nlisten = {listen}\ndomain = \"127.0.0.1\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [billing]\ncdr_path = \"{cdr}\"\n\n[registrar]\nstore_path = \"{store}\"\n{registrar}\n\
         [log]\nlevel = \"warn\"\n\n{rest}\n",
        cdr = dir.join("cdr.jsonl").display(),
        store = dir.join("registrations.journal").display(),
    );
    std::fs::write(&path, toml).expect("write switch config");
    path.to_str().expect("utf-8 temp path").to_string()
}

/// The current value of one series of the switch's `/metrics` (0 when absent).
pub fn metric_now(sw: &Switch, series: &str) -> f64 {
    metric_value(&http_get(sw.http, "/metrics").1, series).unwrap_or(0.0)
}

/// Live transactions of every kind (`softswitch_transactions_active{kind}` summed) in a
/// `/metrics` text.
pub fn live_transactions(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("softswitch_transactions_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` once `within` passed.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads raw bytes from a TCP stream until at least `n` arrived, the peer closed, or
/// the deadline passed.
pub fn tcp_read_at_least(s: &mut TcpStream, n: usize, deadline: Duration) -> Vec<u8> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.len() < n && Instant::now() < end {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => out.extend_from_slice(&chunk[..k]),
        }
    }
    out
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A UDP client socket bound on the same loopback family as `to`.
pub fn udp_client(to: SocketAddr) -> UdpSocket {
    let bind = if to.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let s = UdpSocket::bind(bind).expect("bind udp client");
    s.set_read_timeout(Some(ANSWER_DEADLINE)).expect("timeout");
    s
}

/// Receives one datagram within the deadline.
pub fn udp_recv(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_535];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Receives datagrams until one is a final response (status ≥ 200) or the deadline
/// passes; returns every response seen.
pub fn udp_responses(s: &UdpSocket, deadline: Duration) -> Vec<String> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while Instant::now() < end {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        match udp_recv(s) {
            Some(b) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let fin = status_of(&text).is_some_and(|c| c >= 200);
                out.push(text);
                if fin {
                    break;
                }
            }
            None => break,
        }
    }
    out
}

/// Sends bytes to the switch over UDP and returns the final response, if any.
pub fn udp_exchange(to: SocketAddr, msg: &[u8]) -> Option<String> {
    let s = udp_client(to);
    s.send_to(msg, to).expect("send");
    udp_responses(&s, ANSWER_DEADLINE)
        .into_iter()
        .rev()
        .find(|r| status_of(r).is_some_and(|c| c >= 200))
}

/// The status code of a response's status line.
pub fn status_of(resp: &str) -> Option<u16> {
    let line = resp.lines().next()?;
    let mut it = line.split(' ');
    (it.next()? == "SIP/2.0").then_some(())?;
    it.next()?.parse().ok()
}

/// The reason phrase of a response.
pub fn reason_of(resp: &str) -> String {
    resp.lines()
        .next()
        .unwrap_or("")
        .splitn(3, ' ')
        .nth(2)
        .unwrap_or("")
        .to_string()
}

/// The first value of a header (long name, case-insensitive).
pub fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// A TCP connection to the switch with a read deadline.
pub fn tcp_connect(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&to, ANSWER_DEADLINE).expect("connect");
    s.set_read_timeout(Some(ANSWER_DEADLINE)).expect("timeout");
    s
}

/// Reads from a TCP stream until `count` complete responses (by Content-Length) arrived
/// or the deadline passes.
pub fn tcp_read_responses(s: &mut TcpStream, count: usize, deadline: Duration) -> Vec<String> {
    let end = Instant::now() + deadline;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.len() < count && Instant::now() < end {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        while let Some(end_head) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end_head]).into_owned();
            let cl: usize = header(&head, "Content-Length")
                .or_else(|| header(&head, "l"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() < end_head + 4 + cl {
                break;
            }
            let msg = String::from_utf8_lossy(&buf[..end_head + 4 + cl]).into_owned();
            buf.drain(..end_head + 4 + cl);
            out.push(msg);
        }
    }
    out
}

/// Waits until the peer closes the connection (read returns 0) within the deadline.
pub fn tcp_wait_closed(s: &mut TcpStream, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    let mut chunk = [0u8; 4096];
    while Instant::now() < end {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// GET over HTTP/1.1; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tcp_connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An OPTIONS request addressed to the switch itself.
pub fn options_to(target: SocketAddr, transport: &str, branch: &str) -> String {
    let host = match target {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    format!(
        "OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/{transport} client.invalid:5999;branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=p{branch}\r\nTo: <sip:{host}>\r\nCall-ID: {branch}@client\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n"
    )
}
