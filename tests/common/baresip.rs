//! A driver for a real baresip phone (Debian `baresip-core`, 1.0.0), run headless on
//! loopback and steered through its `ctrl_tcp` module.
//!
//! [`Baresip::start`] writes a config directory (`config`, `accounts`) into a fresh
//! temporary directory, picks free loopback ports for SIP (UDP+TCP on P, and TLS on P+1,
//! which baresip always binds), `ctrl_tcp` and RTP, starts `baresip -f DIR` with stdin
//! null and its stdout/stderr copied to `stdout.log`/`stderr.log` in that directory, and
//! connects to the control port. Commands and their responses are netstring-framed JSON
//! (`LEN:{...},`); a reader thread turns every frame into a [`Msg`] on a channel, so
//! [`Baresip::command`] waits for the response carrying its token and
//! [`Baresip::wait_event`] for an event, each with a deadline. Nothing sleeps.
//!
//! Traps of baresip 1.0.0 handled here (see also `shared/notes/phones.md` §3.1):
//! * `sip_listen P` binds UDP and TCP on P *and TLS on P+1*: all three are checked free.
//!   A taken SIP port makes baresip exit (`ua: init failed`); the start is retried.
//! * A taken `ctrl_tcp_listen` port does *not* stop baresip: it logs
//!   `ctrl_tcp: failed to listen` and goes on (and registers!) without a control
//!   port, so a connect could reach somebody else's listener. The driver waits for
//!   `baresip is ready.` on stdout before connecting and retries when that failure
//!   line came first.
//! * `net_interface lo` fails; the address `127.0.0.1` works.
//! * The stdio UI needs a terminal; it is simply not loaded.
//! * `ausine` only supports 48 kHz stereo, so the source is set to that.
//! * The phone registers at start-up, possibly before the control connection exists,
//!   so the first `REGISTER_OK` event can be missed: poll `reginfo` instead.
//! * `reginfo` answers human text with ANSI colour codes; [`RegInfo::parse`] strips them.
//! * What a phone really received is only visible in `audio_debug` (in-call only):
//!   [`AudioStats::parse`] reads the RTP/RTCP counters from it. `rcvd=N` counts RTP
//!   packets per remote SSRC as they arrive; `psent` stays 0 until the first RTCP
//!   sender report (about 5 s in), so it is not used.
//! * In-call commands act on the *current* call (`listcalls` marks it `>`; `line N`
//!   selects another). `hold` on a ringing incoming call fails (`Invalid argument`) but
//!   still marks it held, so its later `accept` answers `a=sendonly`: select the
//!   established call with `line` before `hold`.
//! * `hold` offers `a=sendonly` and then sends no RTP at all; the held phone answers
//!   `recvonly`. When the current call ends, baresip resumes a held call by itself.
//! * `-t SECS` makes baresip quit by itself: a safety net if the test process dies
//!   without running `Drop`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long baresip may take from spawn to an open control connection.
pub const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a control command may take to be answered.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(5);
/// How many times a start is retried when a picked port turned out to be taken.
const START_ATTEMPTS: u32 = 5;
/// How many candidate ports are tried when looking for a free set.
const PORT_PICK_ATTEMPTS: u32 = 200;
/// How many RTP ports (RTP+RTCP pairs need two each) each phone gets.
const RTP_RANGE: u16 = 20;
/// The largest control frame accepted from baresip (a `help` answer is a few KiB).
const MAX_FRAME: usize = 1 << 20;

/// What to run: the accounts and any extra config lines.
#[derive(Debug, Clone)]
pub struct BaresipOptions {
    /// `accounts` file lines, e.g.
    /// `<sip:alice@127.0.0.1:5060;transport=udp>;auth_pass=pw;regint=60`.
    pub accounts: Vec<String>,
    /// Extra `config` lines (`key value`), appended after the defaults.
    pub extra_config: Vec<String>,
    /// `-s`: baresip prints every SIP message it sends and receives to stdout.
    pub sip_trace: bool,
    /// `-t`: baresip quits by itself after this long, if still running.
    pub max_lifetime: Duration,
}

impl BaresipOptions {
    /// One account, SIP trace on, a 5-minute lifetime.
    pub fn account(line: &str) -> BaresipOptions {
        BaresipOptions {
            accounts: vec![line.to_string()],
            extra_config: vec![],
            sip_trace: true,
            max_lifetime: Duration::from_secs(300),
        }
    }
}

/// One frame from the control connection.
#[derive(Debug, Clone)]
pub enum Msg {
    /// The answer to a command: `{"response":true,"ok":..,"data":..,"token":..}`.
    Response(Response),
    /// An event: `{"event":true,"type":"REGISTER_OK",...}` (the whole object).
    Event(Value),
}

/// A command's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// `ok`: baresip ran the command.
    pub ok: bool,
    /// `data`: the command's text output.
    pub data: String,
    /// `token`, as sent.
    pub token: Option<String>,
}

/// One line of `reginfo`: an account and its registration state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegInfo {
    /// The account's AOR, e.g. `sip:alice@127.0.0.1:5060`.
    pub aor: String,
    /// `OK`, `ERR`, `zzz` (not registering) or whatever baresip prints.
    pub state: String,
    /// The `Expires Ns` figure, when printed.
    pub expires_s: Option<u64>,
}

impl RegInfo {
    /// Parses `reginfo` text: lines like
    /// `> sip:alice@127.0.0.1:5060   \x1b[32mOK \x1b[;m  Expires 59s`.
    pub fn parse(data: &str) -> Vec<RegInfo> {
        strip_ansi(data)
            .lines()
            .filter_map(|l| {
                let l = l.trim_start_matches(['>', ' ']);
                let mut words = l.split_whitespace();
                let aor = words.next()?;
                if !(aor.starts_with("sip:") || aor.starts_with("sips:")) {
                    return None;
                }
                let rest: Vec<&str> = words.collect();
                let state = rest.first().copied().unwrap_or("").to_string();
                let expires_s = rest
                    .windows(2)
                    .find(|w| w[0] == "Expires")
                    .and_then(|w| w[1].trim_end_matches('s').parse().ok());
                Some(RegInfo {
                    aor: aor.to_string(),
                    state,
                    expires_s,
                })
            })
            .collect()
    }

    /// True when baresip counts the account as registered.
    pub fn registered(&self) -> bool {
        self.state == "OK"
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// One RTP source that a phone's RTCP session knows, from `audio_debug`: the
/// `member 0x<ssrc>: lost=N ...` line and the `IP=<addr> psent=N rcvd=N` line under it.
#[derive(Debug, Clone, PartialEq)]
pub struct RtpSource {
    /// The source's SSRC.
    pub ssrc: u32,
    /// The address its RTP packets came from (libre's `rtp_peer`).
    pub addr: Option<SocketAddr>,
    /// RTP packets received from it (libre's `source.received`).
    pub received: u64,
    /// Cumulative packets lost, as reported by RTCP.
    pub lost: i64,
}

/// What one phone's audio stream saw, parsed from the `audio_debug` command (baresip
/// 1.0.0 prints `audio_debug()`, `rtp_debug()` and `rtcp_debug()` of the call's audio
/// stream). The counters come from the phone's own RTP socket, so they observe what
/// really arrived, not what a signalling trace promised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioStats {
    /// Our own SSRC (`cname=... SSRC=0x...`).
    pub ssrc: Option<u32>,
    /// The local RTP socket (`local: 0.0.0.0:PORT`).
    pub local: Option<SocketAddr>,
    /// Where we send RTP (`remote: ADDR/RTCPADDR`: the address from the peer's SDP).
    pub remote: Option<SocketAddr>,
    /// RTP packets we sent (`TX: packets=N`).
    pub tx_packets: Option<u64>,
    /// Seconds of audio encoded (`tx: ... time = S sec`).
    pub tx_seconds: Option<f64>,
    /// Seconds of received audio decoded (`rx: ... time = S sec`).
    pub rx_seconds: Option<f64>,
    /// The stream's negotiated direction (`audio dir=sendrecv pt_enc=0`): `sendrecv`,
    /// `sendonly`, `recvonly` or `inactive`, as this phone applies it (RFC 3264 §6.1).
    pub dir: Option<String>,
    /// The remote sources, one per SSRC heard.
    pub sources: Vec<RtpSource>,
    /// The text parsed (colour codes removed), for assertion messages.
    pub raw: String,
}

impl AudioStats {
    /// Parses `audio_debug` text (see the sample in `tests/phone_calls.rs`).
    pub fn parse(data: &str) -> AudioStats {
        let text = strip_ansi(data);
        let mut st = AudioStats {
            raw: text.clone(),
            ..AudioStats::default()
        };
        // Which half of the `--- Audio stream ---` block a `time =` line belongs to.
        let mut half = "";
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with("tx:") {
                half = "tx";
            } else if l.starts_with("rx:") {
                half = "rx";
            }
            if let Some(t) = l.strip_prefix("time = ") {
                let secs = t.trim_end_matches("sec").trim().parse::<f64>().ok();
                match half {
                    "tx" => st.tx_seconds = st.tx_seconds.or(secs),
                    "rx" => st.rx_seconds = st.rx_seconds.or(secs),
                    _ => {}
                }
            } else if let Some(rest) = l.strip_prefix("audio dir=") {
                st.dir = rest.split_whitespace().next().map(str::to_string);
            } else if let Some(rest) = l.strip_prefix("local: ") {
                // `local: 0.0.0.0:41108, remote: 127.0.0.1:42102/127.0.0.1:42103`
                let (local, remote) = rest.split_once(", remote: ").unwrap_or((rest, ""));
                st.local = local.trim().parse().ok();
                st.remote = remote.split('/').next().and_then(|r| r.trim().parse().ok());
            } else if let Some(i) = l.find(" SSRC=0x").filter(|_| l.starts_with("cname=")) {
                let hex: String = l[i + 8..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect();
                st.ssrc = u32::from_str_radix(&hex, 16).ok();
            } else if let Some(rest) = l.strip_prefix("member 0x") {
                // `member 0x68e9ea43: lost=0 Jitter=0.0ms RTT=0.0ms`
                let (hex, rest) = rest.split_once(':').unwrap_or((rest, ""));
                let lost = word_value(rest, "lost=")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if let Ok(ssrc) = u32::from_str_radix(hex.trim(), 16) {
                    st.sources.push(RtpSource {
                        ssrc,
                        addr: None,
                        received: 0,
                        lost,
                    });
                }
            } else if l.starts_with("IP=") {
                // `IP=127.0.0.1:42102 psent=0 rcvd=141`, under its member line.
                if let Some(src) = st.sources.last_mut() {
                    src.addr = word_value(l, "IP=").and_then(|v| v.parse().ok());
                    src.received = word_value(l, "rcvd=")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                }
            } else if let Some(rest) = l.strip_prefix("TX: packets=") {
                st.tx_packets = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|v| v.parse().ok());
            }
        }
        st
    }

    /// The source with `ssrc`, if this phone heard it.
    pub fn source(&self, ssrc: u32) -> Option<&RtpSource> {
        self.sources.iter().find(|s| s.ssrc == ssrc)
    }

    /// RTP packets received from `ssrc` so far (0 when never heard).
    pub fn received_from(&self, ssrc: u32) -> u64 {
        self.source(ssrc).map_or(0, |s| s.received)
    }
}

/// One line of `listcalls`: a call the phone has, and the line number that `line N`
/// selects it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCall {
    /// The line number (`[line N]`).
    pub line: u32,
    /// Marked `>`: the current call, which `accept`, `hold`, `resume`, `hangup` and
    /// `audio_debug` act on.
    pub current: bool,
    /// baresip's call state: `INCOMING`, `OUTGOING`, `RINGING`, `EARLY`, `ESTABLISHED`...
    pub state: String,
    /// Marked `(on hold)`: this phone has put the call on hold.
    pub on_hold: bool,
    /// The other party's URI.
    pub peer: String,
}

impl ListedCall {
    /// Parses `listcalls` text: lines like
    /// `> [line 2]  0:00:00   INCOMING  (on hold)  sip:carol@127.0.0.1`.
    pub fn parse(data: &str) -> Vec<ListedCall> {
        strip_ansi(data)
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let (current, l) = match l.strip_prefix('>') {
                    Some(rest) => (true, rest.trim_start()),
                    None => (false, l),
                };
                let rest = l.strip_prefix("[line ")?;
                let (n, rest) = rest.split_once(']')?;
                let line = n.trim().parse().ok()?;
                let on_hold = rest.contains("(on hold)");
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !matches!(*w, "(on" | "hold)"))
                    .collect();
                // duration, state, peer
                let [_, state, peer] = words.as_slice() else {
                    return None;
                };
                Some(ListedCall {
                    line,
                    current,
                    state: state.to_string(),
                    on_hold,
                    peer: peer.to_string(),
                })
            })
            .collect()
    }
}

/// The text after `key` up to the next space or comma, in a line of `key=value` words.
fn word_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)?;
    line[i + key.len()..]
        .split([' ', ','])
        .next()
        .filter(|v| !v.is_empty())
}

/// The ports one phone uses.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// SIP over UDP and TCP (TLS is on `sip + 1`).
    pub sip: u16,
    /// The `ctrl_tcp` listener.
    pub ctrl: u16,
    /// The first RTP port; the range is `rtp..rtp + RTP_RANGE`.
    pub rtp: u16,
}

/// A running baresip.
pub struct Baresip {
    child: Child,
    /// The config directory (also holds `stdout.log` and `stderr.log`).
    pub dir: PathBuf,
    /// The ports in use.
    pub ports: Ports,
    ctrl: TcpStream,
    msgs: Receiver<Msg>,
    /// Events received while waiting for something else, oldest first.
    backlog: VecDeque<Value>,
    /// Every event seen, for diagnostics.
    seen: Vec<Value>,
    /// stdout lines, as read by the tee thread, signalled on each new line.
    stdout_lines: Lines,
    next_token: u64,
    exited: Option<ExitStatus>,
}

/// Why one start attempt failed.
enum StartError {
    /// A port was taken: try again with others.
    PortTaken(String),
    /// Anything else: give up.
    Fatal(String),
}

impl Baresip {
    /// Starts baresip with `opts` on fresh loopback ports and connects to its control
    /// port. Panics with a clear message when `baresip` is not installed.
    pub fn start(opts: &BaresipOptions) -> Baresip {
        let mut why = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Baresip::try_start(opts) {
                Ok(b) => return b,
                Err(StartError::PortTaken(e)) => why.push(e),
                Err(StartError::Fatal(e)) => panic!("{e}"),
            }
        }
        panic!("baresip did not start in {START_ATTEMPTS} attempts: {why:#?}")
    }

    fn try_start(opts: &BaresipOptions) -> Result<Baresip, StartError> {
        let ports = pick_ports().map_err(StartError::Fatal)?;
        let dir = temp_dir("baresip");
        write_config(&dir, &ports, opts).map_err(|e| StartError::Fatal(format!("{e}")))?;
        let mut cmd = Command::new("baresip");
        cmd.arg("-4")
            .arg("-f")
            .arg(&dir)
            .arg("-t")
            .arg(opts.max_lifetime.as_secs().max(1).to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if opts.sip_trace {
            cmd.arg("-s");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StartError::Fatal(
                    "baresip is not installed (no `baresip` on PATH): install the Debian \
                     package baresip-core (`apt-get install baresip-core`; \
                     scripts/test-all.sh does this)"
                        .to_string(),
                ))
            }
            Err(e) => return Err(StartError::Fatal(format!("spawn baresip: {e}"))),
        };
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let stdout_lines = Lines::default();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        tee(
            out,
            dir.join("stdout.log"),
            Some(line_tx),
            stdout_lines.clone(),
        );
        tee(err, dir.join("stderr.log"), None, Lines::default());

        // Wait for "baresip is ready." (or a failure) before touching the control port.
        let deadline = Instant::now() + START_DEADLINE;
        let mut ctrl_failed = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) => {
                    let line = strip_ansi(&line);
                    if line.contains("ctrl_tcp: failed to listen") {
                        ctrl_failed = true;
                    }
                    if line.contains("baresip is ready.") {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: baresip exited (e.g. `ua: init failed` on a taken
                    // SIP port).
                    let st = wait_with_deadline(&mut child, Duration::from_secs(2));
                    let log = read_lossy(&dir.join("stdout.log"));
                    let taken = log.contains("Address already in use");
                    let msg = format!(
                        "baresip exited during start-up ({st:?}), ports {ports:?}; \
                         stdout:\n{log}\nstderr:\n{}",
                        read_lossy(&dir.join("stderr.log"))
                    );
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(if taken {
                        StartError::PortTaken(msg)
                    } else {
                        StartError::Fatal(msg)
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(StartError::Fatal(format!(
                        "baresip not ready within {START_DEADLINE:?}; stdout:\n{}",
                        read_lossy(&dir.join("stdout.log"))
                    )));
                }
            }
        }
        if ctrl_failed {
            let _ = child.kill();
            let _ = child.wait();
            let msg = format!("ctrl_tcp could not listen on {}", ports.ctrl);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(StartError::PortTaken(msg));
        }
        // Keep draining stdout lines so the tee thread never blocks on the channel.
        drop(line_rx);

        // "ready" comes after the modules loaded, so ctrl_tcp listens by now: one
        // connect suffices, and a refusal means the port went to someone else.
        let ctrl_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.ctrl));
        let ctrl = match TcpStream::connect_timeout(&ctrl_addr, COMMAND_DEADLINE) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(StartError::PortTaken(format!(
                    "connect to baresip ctrl_tcp {ctrl_addr}: {e}"
                )));
            }
        };
        let _ = ctrl.set_nodelay(true);
        let reader = ctrl
            .try_clone()
            .map_err(|e| StartError::Fatal(format!("clone ctrl stream: {e}")))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_frames(reader, tx));
        Ok(Baresip {
            child,
            dir,
            ports,
            ctrl,
            msgs: rx,
            backlog: VecDeque::new(),
            seen: Vec::new(),
            stdout_lines,
            next_token: 1,
            exited: None,
        })
    }

    /// `127.0.0.1:SIP` as a socket address.
    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.sip))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `command` with `params` and waits for its response. Events that arrive
    /// meanwhile go to the backlog that [`Baresip::wait_event`] looks at first.
    pub fn command(&mut self, command: &str, params: Option<&str>) -> Result<Response, String> {
        self.command_within(command, params, COMMAND_DEADLINE)
    }

    /// [`Baresip::command`] with an explicit deadline.
    pub fn command_within(
        &mut self,
        command: &str,
        params: Option<&str>,
        deadline: Duration,
    ) -> Result<Response, String> {
        let token = format!("t{}", self.next_token);
        self.next_token += 1;
        let mut obj = json!({ "command": command, "token": token });
        if let Some(p) = params {
            obj["params"] = Value::String(p.to_string());
        }
        let body = obj.to_string();
        let frame = format!("{}:{},", body.len(), body);
        self.ctrl
            .write_all(frame.as_bytes())
            .map_err(|e| format!("send {command:?} to baresip: {e}"))?;
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.msgs.recv_timeout(left) {
                Ok(Msg::Response(r)) if r.token.as_deref() == Some(token.as_str()) => return Ok(r),
                Ok(Msg::Response(_)) => {}
                Ok(Msg::Event(e)) => {
                    self.seen.push(e.clone());
                    self.backlog.push_back(e);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no answer to {command:?} within {deadline:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "baresip closed the control connection before answering {command:?}"
                    ))
                }
            }
        }
    }

    /// Waits for an event matching `pred` (looking at the backlog first, and removing
    /// the matching event from it) for at most `deadline`.
    pub fn wait_event(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
        deadline: Duration,
    ) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            return self.backlog.remove(i);
        }
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.msgs.recv_timeout(left) {
                Ok(Msg::Event(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return Some(e);
                    }
                    self.backlog.push_back(e);
                }
                Ok(Msg::Response(_)) => {}
                Err(_) => return None,
            }
        }
    }

    /// Receives at most one frame within `deadline`, keeping an event in the backlog;
    /// true when one arrived.
    fn pump(&mut self, deadline: Duration) -> bool {
        match self.msgs.recv_timeout(deadline) {
            Ok(Msg::Event(e)) => {
                self.seen.push(e.clone());
                self.backlog.push_back(e);
                true
            }
            Ok(Msg::Response(_)) => true,
            Err(_) => false,
        }
    }

    /// Waits for an event of `type` (e.g. `REGISTER_OK`).
    pub fn wait_event_type(&mut self, ty: &str, deadline: Duration) -> Option<Value> {
        self.wait_event(|e| e["type"] == ty, deadline)
    }

    /// Forgets the events received so far (they stay in [`Baresip::events_seen`]).
    pub fn clear_backlog(&mut self) {
        self.backlog.clear();
    }

    /// Every event received so far.
    pub fn events_seen(&self) -> &[Value] {
        &self.seen
    }

    /// `reginfo`, parsed.
    pub fn reginfo(&mut self) -> Result<Vec<RegInfo>, String> {
        let r = self.command("reginfo", None)?;
        if !r.ok {
            return Err(format!("reginfo failed: {}", r.data));
        }
        Ok(RegInfo::parse(&r.data))
    }

    /// Polls `reginfo` until `aor` shows state OK; returns its line, or `None` after
    /// `deadline`. Between polls it waits up to 100 ms for the next event (a
    /// registration emits one), which it keeps in the backlog.
    pub fn wait_registered(&mut self, aor: &str, deadline: Duration) -> Option<RegInfo> {
        let end = Instant::now() + deadline;
        // Bounded by the count and by the deadline.
        for _ in 0..10_000 {
            let info = self.reginfo().ok()?;
            if let Some(i) = info.into_iter().find(|i| i.aor == aor && i.registered()) {
                return Some(i);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Wait for the next event (it may be the registration) or 100 ms.
            self.pump(left.min(Duration::from_millis(100)));
        }
        None
    }

    /// `uadel AOR`: deletes the account, which de-registers it.
    pub fn uadel(&mut self, aor: &str) -> Result<Response, String> {
        self.command("uadel", Some(aor))
    }

    /// `dial URI`.
    pub fn dial(&mut self, uri: &str) -> Result<Response, String> {
        self.command("dial", Some(uri))
    }

    /// `accept`: answers the ringing call.
    pub fn accept(&mut self) -> Result<Response, String> {
        self.command("accept", None)
    }

    /// `hangup`: ends the current call (on a ringing incoming call: 486).
    pub fn hangup(&mut self) -> Result<Response, String> {
        self.command("hangup", None)
    }

    /// `hold`: puts the current call on hold (a re-INVITE offering `a=sendonly`).
    pub fn hold(&mut self) -> Result<Response, String> {
        self.command("hold", None)
    }

    /// `resume`: takes the current call off hold (a re-INVITE offering `a=sendrecv`).
    pub fn resume(&mut self) -> Result<Response, String> {
        self.command("resume", None)
    }

    /// `line N`: makes the call on line `n` (see [`Baresip::listcalls`]) the current one.
    pub fn line(&mut self, n: u32) -> Result<Response, String> {
        self.command("line", Some(&n.to_string()))
    }

    /// `listcalls`, parsed.
    pub fn listcalls(&mut self) -> Result<Vec<ListedCall>, String> {
        let r = self.command("listcalls", None)?;
        if !r.ok {
            return Err(format!("listcalls failed: {}", r.data));
        }
        Ok(ListedCall::parse(&r.data))
    }

    /// `audio_debug`: the current call's audio stream statistics (only while a call
    /// exists; the command is not even listed otherwise).
    pub fn audio_stats(&mut self) -> Result<AudioStats, String> {
        let r = self.command("audio_debug", None)?;
        if !r.ok {
            return Err(format!("audio_debug failed: {}", r.data));
        }
        Ok(AudioStats::parse(&r.data))
    }

    /// `quit` (de-registers every account first), then waits for the process to exit.
    pub fn quit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let _ = self.command("quit", None);
        self.wait_exit(deadline)
    }

    /// Waits for the process to exit, with a deadline. The control connection closes
    /// when it does, so this waits on the reader channel rather than polling.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited {
            return Some(st);
        }
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.msgs.recv_timeout(left) {
                Ok(Msg::Event(e)) => {
                    self.seen.push(e.clone());
                    self.backlog.push_back(e);
                }
                Ok(Msg::Response(_)) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => return None,
            }
        }
        // The connection is closed; the process is gone or going.
        let left = end.saturating_duration_since(Instant::now());
        let st = wait_with_deadline(&mut self.child, left.max(Duration::from_secs(1)));
        self.exited = st;
        st
    }

    /// baresip's stdout so far (with `-s`, every SIP message), without colour codes.
    pub fn stdout_log(&self) -> String {
        strip_ansi(&self.stdout_lines.joined())
    }

    /// Waits until `pred` holds for the stdout log (without colour codes), for at most
    /// `deadline`; true if it did. stdout and the control connection are two channels,
    /// so the SIP trace of a response can reach us after the event it caused.
    pub fn wait_stdout(&self, pred: impl FnMut(&str) -> bool, deadline: Duration) -> bool {
        self.stdout_lines.wait_until(pred, deadline)
    }

    /// A summary for assertion messages: the events seen and the stdout log.
    pub fn diagnostics(&self) -> String {
        let events: Vec<String> = self.seen.iter().map(|e| e.to_string()).collect();
        format!(
            "baresip dir {}\nports {:?}\nevents:\n{}\nstdout:\n{}\nstderr:\n{}",
            self.dir.display(),
            self.ports,
            events.join("\n"),
            self.stdout_log(),
            read_lossy(&self.dir.join("stderr.log"))
        )
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // Shown by the test harness with the failure; the dir is kept for a look.
            eprintln!("--- baresip diagnostics ---\n{}", self.diagnostics());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Lines of a child's output, shared with the thread that reads them.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn push(&self, line: String) {
        let (m, cv) = &*self.0;
        if let Ok(mut l) = m.lock() {
            l.push(line);
        }
        cv.notify_all();
    }

    fn joined(&self) -> String {
        self.0 .0.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits, woken by each new line, until `pred` holds for the joined text.
    fn wait_until(&self, mut pred: impl FnMut(&str) -> bool, deadline: Duration) -> bool {
        let (m, cv) = &*self.0;
        let end = Instant::now() + deadline;
        let Ok(mut l) = m.lock() else { return false };
        loop {
            if pred(&strip_ansi(&l.join("\n"))) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match cv.wait_timeout(l, left) {
                Ok((g, _)) => l = g,
                Err(_) => return false,
            }
        }
    }
}

/// A fresh temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let d = std::env::temp_dir().join(format!("softswitch-{tag}-{}-{r:x}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create baresip temp dir");
    d
}

/// Picks a SIP port P (UDP P, TCP P and TCP P+1 free), a control port and an RTP
/// range, by binding port 0 and releasing. Another process may take one of them before
/// baresip binds it; [`Baresip::start`] retries then.
fn pick_ports() -> Result<Ports, String> {
    let lo = Ipv4Addr::LOCALHOST;
    let mut sip = None;
    for _ in 0..PORT_PICK_ATTEMPTS {
        let udp = UdpSocket::bind((lo, 0)).map_err(|e| format!("bind udp: {e}"))?;
        let p = udp.local_addr().map_err(|e| e.to_string())?.port();
        if p == u16::MAX {
            continue;
        }
        let tcp = TcpListener::bind((lo, p));
        let tls = TcpListener::bind((lo, p + 1));
        if tcp.is_ok() && tls.is_ok() {
            sip = Some(p);
            break;
        }
    }
    let sip = sip.ok_or("no free SIP port (UDP+TCP P, TCP P+1) on 127.0.0.1")?;
    let mut ctrl = None;
    for _ in 0..PORT_PICK_ATTEMPTS {
        let l = TcpListener::bind((lo, 0)).map_err(|e| format!("bind tcp: {e}"))?;
        let p = l.local_addr().map_err(|e| e.to_string())?.port();
        if p != sip && p != sip + 1 {
            ctrl = Some(p);
            break;
        }
    }
    let ctrl = ctrl.ok_or("no free control port on 127.0.0.1")?;
    let mut rtp = None;
    for _ in 0..PORT_PICK_ATTEMPTS {
        let first = UdpSocket::bind((lo, 0)).map_err(|e| format!("bind udp: {e}"))?;
        let p = first.local_addr().map_err(|e| e.to_string())?.port();
        if p.checked_add(RTP_RANGE).is_none() {
            continue;
        }
        let clash = |q: u16| q == sip || q == sip + 1 || q == ctrl;
        drop(first);
        let all_free = (p..p + RTP_RANGE).all(|q| !clash(q) && UdpSocket::bind((lo, q)).is_ok());
        if all_free {
            rtp = Some(p);
            break;
        }
    }
    let rtp = rtp.ok_or("no free RTP range on 127.0.0.1")?;
    Ok(Ports { sip, ctrl, rtp })
}

fn write_config(dir: &Path, ports: &Ports, opts: &BaresipOptions) -> std::io::Result<()> {
    let mut c = String::new();
    let mut line = |k: &str, v: &str| {
        c.push_str(k);
        c.push('\t');
        c.push_str(v);
        c.push('\n');
    };
    line("poll_method", "epoll");
    line("sip_listen", &format!("127.0.0.1:{}", ports.sip));
    line("net_interface", "127.0.0.1");
    line("audio_player", "aubridge,nil");
    line("audio_source", "ausine,440");
    line("audio_alert", "aubridge,nil");
    line("ausrc_srate", "48000");
    line("ausrc_channels", "2");
    line("auplay_srate", "48000");
    line("auplay_channels", "1");
    line(
        "rtp_ports",
        &format!("{}-{}", ports.rtp, ports.rtp + RTP_RANGE - 1),
    );
    line("module_path", "/usr/lib/baresip/modules");
    line("module", "g711.so");
    line("module", "ausine.so");
    line("module", "aubridge.so");
    line("module", "ctrl_tcp.so");
    line("module_tmp", "account.so");
    line("module_app", "menu.so");
    line("ctrl_tcp_listen", &format!("127.0.0.1:{}", ports.ctrl));
    for l in &opts.extra_config {
        c.push_str(l);
        c.push('\n');
    }
    std::fs::write(dir.join("config"), c)?;
    let mut a = opts.accounts.join("\n");
    a.push('\n');
    std::fs::write(dir.join("accounts"), a)
}

/// Copies `src` line by line into `file` and `lines` (and `tx` while it listens).
fn tee(
    src: impl Read + Send + 'static,
    file: PathBuf,
    tx: Option<mpsc::Sender<String>>,
    lines: Lines,
) {
    std::thread::spawn(move || {
        let mut f = File::create(&file).ok();
        let mut tx = tx;
        let mut r = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(f) = f.as_mut() {
                let _ = f.write_all(&buf);
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if let Some(t) = &tx {
                if t.send(line.clone()).is_err() {
                    tx = None;
                }
            }
            lines.push(line);
        }
    });
}

/// Reads netstring frames (`LEN:JSON,`) and sends each as a [`Msg`] until the stream
/// closes or a frame is malformed.
fn read_frames(s: TcpStream, tx: mpsc::Sender<Msg>) {
    let mut r = BufReader::new(s);
    loop {
        let mut len = Vec::new();
        match r.read_until(b':', &mut len) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if len.last() != Some(&b':') {
            return;
        }
        len.pop();
        let Some(n) = std::str::from_utf8(&len)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .filter(|&n| n <= MAX_FRAME)
        else {
            return;
        };
        let mut body = vec![0u8; n + 1];
        if r.read_exact(&mut body).is_err() || body[n] != b',' {
            return;
        }
        body.truncate(n);
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        let msg = if v["response"] == true {
            Msg::Response(Response {
                ok: v["ok"] == true,
                data: v["data"].as_str().unwrap_or("").to_string(),
                token: v["token"].as_str().map(str::to_string),
            })
        } else if v["event"] == true {
            Msg::Event(v)
        } else {
            continue;
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| strip_ansi(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

/// `try_wait` until the child exits or the deadline passes (the exit itself has no
/// event to wait on; the interval is a poll of an already-requested exit).
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
