//! The `softswitch` binary: parse the command line, load the configuration, start
//! logging and metrics, start the switch, wait for SIGTERM or SIGINT, drain, exit 0.

use softswitch::config::{self, Config};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the message path allocates small, short-lived
/// strings by the dozen, and glibc's `_int_malloc`/`_int_free` were 20 % of the switch's
/// CPU under REGISTER load (perf, 12,000 registrations/s).
/// (The default feature `mimalloc`; without it the system allocator, for heap profilers.)
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: softswitch [--config FILE] | --check-config FILE | --healthcheck URL | --version";

/// No transparent huge pages for this process (Linux). The switch's heap is many small
/// objects that live as long as a call; with THP a 2 MiB page is backed whole as soon as
/// one of its 64 KiB allocator pages is touched, and is not given back while one object
/// in it lives. Measured with 10,000 held calls (`bench/call-hold.sh`, mimalloc, THP
/// `madvise` as Debian ships it): 5,078 bytes per held call with huge pages, 4,386
/// without, and a baseline of 12 MB against 4.5 MB. The switch's hot path is message
/// parsing in a few caches' worth of memory, not TLB-bound. mimalloc is also built with
/// `no_thp` (it would `madvise` its arenas into huge pages); this covers hosts whose THP
/// setting is `always`, and what the Rust runtime maps. Best effort: an older kernel or
/// a sandbox that refuses the call leaves the setting as it was.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("softswitch: transparent huge pages left on (prctl: {e})");
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let mut args = std::env::args().skip(1);
    let mut config_path: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => return usage(),
            },
            "--check-config" => {
                return match args.next() {
                    Some(p) => exit(config::check_config_main(std::path::Path::new(&p))),
                    None => usage(),
                }
            }
            "--healthcheck" => {
                let target = args.next().unwrap_or_else(|| "127.0.0.1:9090".to_string());
                return exit(softswitch::http::healthcheck(&target));
            }
            "--version" | "-V" => {
                println!("softswitch {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let config = match Config::load(config_path.as_deref(), config::env_vars()) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log.level);
    let handle = match softswitch::metrics::install(env!("CARGO_PKG_VERSION")) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let signals = Signals::install();
        let running = softswitch::server::start(&config, handle).await?;
        for a in &running.udp {
            println!("listening udp {a}");
        }
        for a in &running.tcp {
            println!("listening tcp {a}");
        }
        println!("listening http {}", running.http);
        println!("ready");
        tracing::info!(udp = ?running.udp, tcp = ?running.tcp, http = %running.http, domain = %config.sip.domain, "softswitch ready");
        signals.wait().await;
        tracing::info!("shutting down: draining");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok::<(), std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("softswitch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only on a terminal: container logs and files get plain text. A log line
    // that cannot be written (stderr redirected to a file on a full disk, or past the
    // file-size limit) is dropped: tracing-subscriber's fallback for a failed write is
    // `eprintln!`, which panics when stderr fails too, and would take down whichever
    // thread logged (the CDR writer reporting that very disk error, a call's task).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
}

/// SIGTERM and SIGINT handlers, installed before `ready` is printed: a supervisor (or a
/// test) may signal the moment it reads `ready`, and a signal that comes before the
/// handler exists would kill the process with no drain. SIGXFSZ is caught too, before
/// any file is opened: a CDR or journal write past the file-size limit (RLIMIT_FSIZE, a
/// container's or a quota's) must fail with EFBIG, which the writers count and retry,
/// instead of killing the switch and every call with it.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    /// Held so the handler stays; never awaited.
    #[cfg(unix)]
    _file_size: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let xfsz = nix::sys::signal::Signal::SIGXFSZ as i32;
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
                _file_size: signal(SignalKind::from_raw(xfsz)).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let (mut term, mut int) = (self.term, self.int);
            tokio::select! {
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                _ = async { match int.as_mut() { Some(i) => { i.recv().await; } None => { let _ = tokio::signal::ctrl_c().await; } } } => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
