//! L5: every metric the switch exports, declared here and only here (STYLE.md §1
//! invariant 4, §9; Prometheus `docs/practices/naming.md` and `instrumentation.md`).
//!
//! Other modules never name a metric: they call the small typed recording functions
//! below (`sip_request_received`, `call_ended`, …). Names carry the `softswitch_` prefix,
//! base units and a unit suffix, `_total` on counters; labels take values from closed
//! sets of about ten at most. A label value outside its set is recorded as `other`, so
//! a caller's mistake cannot grow the series count.
//!
//! [`install`] sets up `metrics-exporter-prometheus` as the global recorder *without*
//! its own HTTP listener (ours is [`crate::http`]), with explicit buckets for the call
//! setup histogram, so it renders as a Prometheus histogram rather than a summary, and
//! registers every known series at zero ("avoid missing metrics"). A registered but
//! unobserved histogram is rendered by the exporter with zero buckets, `_sum` and
//! `_count` (the exporter drains every registered histogram handle at render time), so
//! no fake observation is needed; the unit tests pin that.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: bindings currently held by the registrar.
pub const REGISTRATIONS_ACTIVE: &str = "softswitch_registrations_active";
/// Gauge: calls currently in progress (setting up or connected).
pub const CALLS_ACTIVE: &str = "softswitch_calls_active";
/// Counter `{disposition}`: calls ended, by CDR disposition.
pub const CALLS_TOTAL: &str = "softswitch_calls_total";
/// Counter `{method}`: SIP requests received (retransmissions included).
pub const SIP_REQUESTS_RECEIVED_TOTAL: &str = "softswitch_sip_requests_received_total";
/// Counter `{class}`: SIP responses sent, by status class.
pub const SIP_RESPONSES_SENT_TOTAL: &str = "softswitch_sip_responses_sent_total";
/// Histogram: time from the initial INVITE to its final response, in seconds.
pub const CALL_SETUP_DURATION_SECONDS: &str = "softswitch_call_setup_duration_seconds";
/// Counter: CDRs written and synced to disk.
pub const CDRS_WRITTEN_TOTAL: &str = "softswitch_cdrs_written_total";
/// Counter: attempts to write and sync a batch of CDRs that failed (each failed retry
/// counts); the batch is kept and retried, nothing is answered as stored.
pub const CDR_WRITE_FAILURES_TOTAL: &str = "softswitch_cdr_write_failures_total";
/// Gauge: CDRs handed to the writer and not yet on disk (a few, for a few ms, under load;
/// growing while writes fail).
pub const CDRS_PENDING: &str = "softswitch_cdrs_pending";
/// Gauge `{version}`: always 1; carries the build's version as a label.
pub const BUILD_INFO: &str = "softswitch_build_info";
/// Counter `{reason}`: inbound messages refused by the wire layer (400/413/… or dropped).
pub const SIP_MESSAGES_REJECTED_TOTAL: &str = "softswitch_sip_messages_rejected_total";
/// Counter `{reason}`: inbound responses dropped (malformed, or matching no transaction).
pub const SIP_RESPONSES_DROPPED_TOTAL: &str = "softswitch_sip_responses_dropped_total";
/// Counter `{direction}`: retransmissions sent by our timers or received from peers.
pub const SIP_RETRANSMISSIONS_TOTAL: &str = "softswitch_sip_retransmissions_total";
/// Counter `{timer}`: transactions that ended because a timeout timer fired.
pub const TRANSACTION_TIMEOUTS_TOTAL: &str = "softswitch_transaction_timeouts_total";
/// Gauge `{kind}`: live transactions by kind.
pub const TRANSACTIONS_ACTIVE: &str = "softswitch_transactions_active";
/// Gauge: live transactions that only wait out a timer (RFC 6026 Accepted, Timer D/I/J/K).
pub const TRANSACTIONS_LINGERING: &str = "softswitch_transactions_lingering";
/// Gauge: the transaction table's bound in force (`limits.max_transactions`).
pub const TRANSACTIONS_CAPACITY: &str = "softswitch_transactions_capacity";
/// Counter: lingering transactions retired before their timer to make room at the bound.
pub const TRANSACTIONS_RETIRED_TOTAL: &str = "softswitch_transactions_retired_total";
/// Gauge: open TCP connections.
pub const TCP_CONNECTIONS_ACTIVE: &str = "softswitch_tcp_connections_active";
/// Counter: TCP connections refused because `sip.tcp_max_connections` was reached.
pub const TCP_CONNECTIONS_REJECTED_TOTAL: &str = "softswitch_tcp_connections_rejected_total";
/// Counter `{actor}`: messages refused because an actor's mailbox was full.
pub const MAILBOX_REJECTED_TOTAL: &str = "softswitch_mailbox_rejected_total";
/// Gauge: call legs held by live calls (A-legs and B-legs).
pub const CALL_LEGS_ACTIVE: &str = "softswitch_call_legs_active";
/// Counter: calls ended because their handler panicked (each ended alone).
pub const CALL_PANICS_TOTAL: &str = "softswitch_call_panics_total";
/// Counter `{result}`: REGISTER requests by outcome.
pub const REGISTER_REQUESTS_TOTAL: &str = "softswitch_register_requests_total";
/// Counter `{reason}`: digest authentications that failed, by reason.
pub const AUTH_FAILURES_TOTAL: &str = "softswitch_auth_failures_total";

/// The value used for any label value outside its closed set.
pub const OTHER: &str = "other";

/// `method` label values: the methods the switch knows, then `other`.
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    OTHER,
];
/// `class` label values.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
/// `disposition` label values, as in the CDR (`spec/interface.md`, "CDRs").
pub const DISPOSITIONS: [&str; 6] = [
    "answered",
    "busy",
    "no_answer",
    "cancelled",
    "rejected",
    "failed",
];
/// `reason` label values of [`SIP_MESSAGES_REJECTED_TOTAL`].
pub const REJECT_REASONS: [&str; 15] = [
    "parse",
    "too_large",
    "body_too_large",
    "too_many_headers",
    "line_too_long",
    "version",
    "scheme",
    "extension",
    "media_type",
    "method",
    "max_forwards",
    "loop",
    "routing",
    "overload",
    "cdr_backlog",
];
/// `reason` label values of [`SIP_RESPONSES_DROPPED_TOTAL`].
pub const DROP_REASONS: [&str; 3] = ["parse", "no_transaction", "via"];
/// `direction` label values of [`SIP_RETRANSMISSIONS_TOTAL`].
pub const DIRECTIONS: [&str; 2] = ["sent", "received"];
/// `timer` label values of [`TRANSACTION_TIMEOUTS_TOTAL`]: the RFC 3261 §17 timers
/// whose firing ends a transaction in failure.
pub const TIMEOUT_TIMERS: [&str; 3] = ["B", "F", "H"];
/// `kind` label values of [`TRANSACTIONS_ACTIVE`] (`txn/{ict,nict,ist,nist}.rs`).
pub const TRANSACTION_KINDS: [&str; 4] = [
    "invite_client",
    "non_invite_client",
    "invite_server",
    "non_invite_server",
];
/// `actor` label values of [`MAILBOX_REJECTED_TOTAL`].
pub const ACTORS: [&str; 5] = ["registrar", "location", "call", "leg", "billing"];

/// `result` label values of [`REGISTER_REQUESTS_TOTAL`]: `ok` (bindings changed or
/// refreshed), `query` (answered with the bindings unchanged: no Contact, or a
/// retransmission), `challenged` (401), `stale` (401 with `stale=true`), then refusals.
pub const REGISTER_RESULTS: [&str; 12] = [
    "ok",
    "query",
    "challenged",
    "stale",
    "forbidden",
    "not_found",
    "bad_request",
    "interval_too_brief",
    "too_many_contacts",
    "out_of_order",
    "overloaded",
    "storage",
];
/// `reason` label values of [`AUTH_FAILURES_TOTAL`] (`crate::auth::FailReason`).
pub const AUTH_FAILURE_REASONS: [&str; 13] = [
    "missing",
    "malformed",
    "unknown_user",
    "wrong_password",
    "stale_nonce",
    "bad_nonce",
    "nc_replay",
    "algorithm",
    "no_credential",
    "realm",
    "qop",
    "too_many_failures",
    "blocked",
];

/// Upper bounds of the call setup histogram's buckets, in seconds: from a fast
/// answer on loopback to the default 20 s ring time and a little beyond.
pub const CALL_SETUP_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 25.0, 30.0,
];

/// How often [`install`]'s upkeep thread drains histogram samples when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The exporter configuration the switch uses (buckets set, no listener). Tests use it
/// with `build_recorder()` and `metrics::with_local_recorder` to stay off the global
/// recorder.
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(CALL_SETUP_DURATION_SECONDS.to_string()),
            &CALL_SETUP_BUCKETS,
        )
        // The slice is a non-empty constant, the only error set_buckets_for_metric has.
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Installs the global recorder, describes every metric and registers every known
/// series at zero (`softswitch_build_info{version}` at 1), and starts a background
/// thread that runs the exporter's upkeep every [`UPKEEP_INTERVAL`], bounding the
/// memory held by histogram samples between scrapes. Call once, early in `main`.
///
/// Fails if a global recorder is already installed.
pub fn install(version: &str) -> Result<PrometheusHandle, BuildError> {
    let handle = builder().install_recorder()?;
    register_all(version);
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_string())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
    if let Err(e) = spawned {
        // Rendering also drains samples, so a scraped switch still stays bounded.
        tracing::warn!(error = %e, "could not start the metrics upkeep thread");
    }
    Ok(handle)
}

/// Describes every metric and registers every known series on the current recorder:
/// counters and gauges at 0, the histogram empty, build info at 1.
pub fn register_all(version: &str) {
    describe_all();
    gauge!(REGISTRATIONS_ACTIVE).set(0.0);
    gauge!(CALLS_ACTIVE).set(0.0);
    gauge!(TCP_CONNECTIONS_ACTIVE).set(0.0);
    counter!(CDRS_WRITTEN_TOTAL).absolute(0);
    counter!(CDR_WRITE_FAILURES_TOTAL).absolute(0);
    gauge!(CDRS_PENDING).set(0.0);
    counter!(TCP_CONNECTIONS_REJECTED_TOTAL).absolute(0);
    let _ = histogram!(CALL_SETUP_DURATION_SECONDS);
    gauge!(BUILD_INFO, "version" => version.to_string()).set(1.0);
    for d in DISPOSITIONS {
        counter!(CALLS_TOTAL, "disposition" => d).absolute(0);
    }
    for m in METHODS {
        counter!(SIP_REQUESTS_RECEIVED_TOTAL, "method" => m).absolute(0);
    }
    for c in CLASSES {
        counter!(SIP_RESPONSES_SENT_TOTAL, "class" => c).absolute(0);
    }
    for r in REJECT_REASONS {
        counter!(SIP_MESSAGES_REJECTED_TOTAL, "reason" => r).absolute(0);
    }
    for r in DROP_REASONS {
        counter!(SIP_RESPONSES_DROPPED_TOTAL, "reason" => r).absolute(0);
    }
    for d in DIRECTIONS {
        counter!(SIP_RETRANSMISSIONS_TOTAL, "direction" => d).absolute(0);
    }
    for t in TIMEOUT_TIMERS {
        counter!(TRANSACTION_TIMEOUTS_TOTAL, "timer" => t).absolute(0);
    }
    for k in TRANSACTION_KINDS {
        gauge!(TRANSACTIONS_ACTIVE, "kind" => k).set(0.0);
    }
    gauge!(TRANSACTIONS_LINGERING).set(0.0);
    gauge!(TRANSACTIONS_CAPACITY).set(0.0);
    counter!(TRANSACTIONS_RETIRED_TOTAL).absolute(0);
    for a in ACTORS {
        counter!(MAILBOX_REJECTED_TOTAL, "actor" => a).absolute(0);
    }
    for r in REGISTER_RESULTS {
        counter!(REGISTER_REQUESTS_TOTAL, "result" => r).absolute(0);
    }
    counter!(CALL_PANICS_TOTAL).absolute(0);
    gauge!(CALL_LEGS_ACTIVE).set(0.0);
    for r in AUTH_FAILURE_REASONS {
        counter!(AUTH_FAILURES_TOTAL, "reason" => r).absolute(0);
    }
}

/// The `method` label for a request method: itself when known, else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or(OTHER)
}

/// The `class` label for a status code (`1xx`..`6xx`), `other` outside 100..=699.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        600..=699 => "6xx",
        _ => OTHER,
    }
}

/// Handles of the per-message series, fetched once from the installed recorder so the
/// hot path (one request, one response) does no registry lookup. Create it after
/// [`install`]; a handle fetched before a recorder exists records nothing.
pub struct SipCounters {
    requests: Vec<metrics::Counter>,
    responses: Vec<metrics::Counter>,
    retransmissions_sent: metrics::Counter,
    retransmissions_received: metrics::Counter,
    transactions: Vec<metrics::Gauge>,
    lingering: metrics::Gauge,
    retired: metrics::Counter,
}

impl SipCounters {
    /// Fetches every handle from the current recorder.
    pub fn new() -> SipCounters {
        SipCounters {
            requests: METHODS
                .iter()
                .map(|m| counter!(SIP_REQUESTS_RECEIVED_TOTAL, "method" => *m))
                .collect(),
            responses: CLASSES
                .iter()
                .map(|c| counter!(SIP_RESPONSES_SENT_TOTAL, "class" => *c))
                .collect(),
            retransmissions_sent: counter!(SIP_RETRANSMISSIONS_TOTAL, "direction" => "sent"),
            retransmissions_received: counter!(SIP_RETRANSMISSIONS_TOTAL, "direction" => "received"),
            transactions: TRANSACTION_KINDS
                .iter()
                .map(|k| gauge!(TRANSACTIONS_ACTIVE, "kind" => *k))
                .collect(),
            lingering: gauge!(TRANSACTIONS_LINGERING),
            retired: counter!(TRANSACTIONS_RETIRED_TOTAL),
        }
    }

    /// A request arrived; `method` is a method name or a [`METHODS`] label.
    pub fn request_received(&self, method: &str) {
        let label = method_label(method);
        if let Some(i) = METHODS.iter().position(|m| *m == label) {
            self.requests[i].increment(1);
        }
    }

    /// A response left.
    pub fn response_sent(&self, status: u16) {
        if let Some(i) = CLASSES.iter().position(|c| *c == status_class(status)) {
            self.responses[i].increment(1);
        }
    }

    /// Retransmissions sent and received since the last call.
    pub fn retransmissions(&self, sent: u64, received: u64) {
        if sent > 0 {
            self.retransmissions_sent.increment(sent);
        }
        if received > 0 {
            self.retransmissions_received.increment(received);
        }
    }

    /// There are now `n` live transactions of `kind` (one of [`TRANSACTION_KINDS`]).
    pub fn transactions_active(&self, kind: &str, n: usize) {
        if let Some(i) = TRANSACTION_KINDS.iter().position(|k| *k == kind) {
            self.transactions[i].set(n as f64);
        }
    }

    /// `n` live transactions linger; `retired` more were retired to make room.
    pub fn transactions_lingering(&self, n: usize, retired: u64) {
        self.lingering.set(n as f64);
        if retired > 0 {
            self.retired.increment(retired);
        }
    }
}

impl Default for SipCounters {
    fn default() -> SipCounters {
        SipCounters::new()
    }
}

/// A request arrived. `method` is a method name (any case) or a [`METHODS`] label.
pub fn sip_request_received(method: &str) {
    counter!(SIP_REQUESTS_RECEIVED_TOTAL, "method" => method_label(method)).increment(1);
}

/// A response left, retransmissions included.
pub fn sip_response_sent(status: u16) {
    counter!(SIP_RESPONSES_SENT_TOTAL, "class" => status_class(status)).increment(1);
}

/// The wire layer refused an inbound message; `reason` is one of [`REJECT_REASONS`].
pub fn sip_message_rejected(reason: &'static str) {
    counter!(SIP_MESSAGES_REJECTED_TOTAL, "reason" => closed(reason, &REJECT_REASONS)).increment(1);
}

/// An inbound response was dropped; `reason` is one of [`DROP_REASONS`].
pub fn sip_response_dropped(reason: &'static str) {
    counter!(SIP_RESPONSES_DROPPED_TOTAL, "reason" => closed(reason, &DROP_REASONS)).increment(1);
}

/// `n` retransmissions; `direction` is `sent` or `received`.
pub fn retransmissions(direction: &'static str, n: u64) {
    counter!(SIP_RETRANSMISSIONS_TOTAL, "direction" => closed(direction, &DIRECTIONS)).increment(n);
}

/// A transaction timed out; `timer` is the RFC letter that fired (`B`, `F`, `H`).
pub fn transaction_timeout(timer: &'static str) {
    counter!(TRANSACTION_TIMEOUTS_TOTAL, "timer" => closed(timer, &TIMEOUT_TIMERS)).increment(1);
}

/// There are now `n` live transactions of `kind` (`ict`, `nict`, `ist`, `nist`).
pub fn transactions_active(kind: &'static str, n: usize) {
    gauge!(TRANSACTIONS_ACTIVE, "kind" => closed(kind, &TRANSACTION_KINDS)).set(n as f64);
}

/// The transaction table holds at most `n` (set once at start-up).
pub fn transactions_capacity(n: usize) {
    gauge!(TRANSACTIONS_CAPACITY).set(n as f64);
}

/// There are now `n` open TCP connections.
pub fn tcp_connections_active(n: usize) {
    gauge!(TCP_CONNECTIONS_ACTIVE).set(n as f64);
}

/// A TCP connection was refused at the connection limit.
pub fn tcp_connection_rejected() {
    counter!(TCP_CONNECTIONS_REJECTED_TOTAL).increment(1);
}

/// The registrar now holds `n` bindings.
pub fn registrations_active(n: usize) {
    gauge!(REGISTRATIONS_ACTIVE).set(n as f64);
}

/// Live calls now hold `n` legs.
pub fn call_legs_active(n: usize) {
    gauge!(CALL_LEGS_ACTIVE).set(n as f64);
}

/// There are now `n` calls in progress.
pub fn calls_active(n: usize) {
    gauge!(CALLS_ACTIVE).set(n as f64);
}

/// A call ended; `disposition` is one of [`DISPOSITIONS`] (the CDR's field).
pub fn call_ended(disposition: &'static str) {
    counter!(CALLS_TOTAL, "disposition" => closed(disposition, &DISPOSITIONS)).increment(1);
}

/// A call's setup (initial INVITE to final response) took `secs` seconds.
pub fn call_setup_duration(secs: f64) {
    histogram!(CALL_SETUP_DURATION_SECONDS).record(secs);
}

/// A CDR reached the disk.
pub fn cdr_written() {
    counter!(CDRS_WRITTEN_TOTAL).increment(1);
}

/// Exports the CDR writer's failure count and backlog (read at each scrape: the writer
/// thread only keeps atomics).
pub fn cdr_writer(c: &softswitch_actors::billing::BillingCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    counter!(CDR_WRITE_FAILURES_TOTAL).absolute(c.failed_batches.load(Relaxed));
    gauge!(CDRS_PENDING).set(c.pending.load(Relaxed) as f64);
}

/// A call's handler panicked and the call was ended.
pub fn call_panicked() {
    counter!(CALL_PANICS_TOTAL).increment(1);
}

/// A REGISTER was answered; `result` is one of [`REGISTER_RESULTS`].
pub fn register_result(result: &'static str) {
    counter!(REGISTER_REQUESTS_TOTAL, "result" => closed(result, &REGISTER_RESULTS)).increment(1);
}

/// A digest authentication failed; `reason` is one of [`AUTH_FAILURE_REASONS`].
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES_TOTAL, "reason" => closed(reason, &AUTH_FAILURE_REASONS)).increment(1);
}

/// An actor's mailbox was full and refused a message; `actor` is one of [`ACTORS`].
pub fn mailbox_rejected(actor: &'static str) {
    counter!(MAILBOX_REJECTED_TOTAL, "actor" => closed(actor, &ACTORS)).increment(1);
}

fn closed(value: &'static str, set: &[&'static str]) -> &'static str {
    if set.contains(&value) {
        value
    } else {
        OTHER
    }
}

fn describe_all() {
    describe_gauge!(
        CALL_LEGS_ACTIVE,
        Unit::Count,
        "Call legs (A and B) held by live calls."
    );
    describe_counter!(
        CALL_PANICS_TOTAL,
        Unit::Count,
        "Calls ended because their handler panicked (each ended alone)."
    );
    describe_counter!(
        REGISTER_REQUESTS_TOTAL,
        Unit::Count,
        "REGISTER requests answered, by result."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        Unit::Count,
        "Digest authentications that failed, by reason."
    );
    describe_gauge!(
        REGISTRATIONS_ACTIVE,
        Unit::Count,
        "Bindings currently held by the registrar."
    );
    describe_gauge!(
        CALLS_ACTIVE,
        Unit::Count,
        "Calls currently setting up or connected."
    );
    describe_counter!(CALLS_TOTAL, Unit::Count, "Calls ended, by CDR disposition.");
    describe_counter!(
        SIP_REQUESTS_RECEIVED_TOTAL,
        Unit::Count,
        "SIP requests received, retransmissions included, by method."
    );
    describe_counter!(
        SIP_RESPONSES_SENT_TOTAL,
        Unit::Count,
        "SIP responses sent, retransmissions included, by status class."
    );
    describe_histogram!(
        CALL_SETUP_DURATION_SECONDS,
        Unit::Seconds,
        "Time from an initial INVITE to its final response."
    );
    describe_counter!(
        CDRS_WRITTEN_TOTAL,
        Unit::Count,
        "CDRs written and synced to disk."
    );
    describe_counter!(
        CDR_WRITE_FAILURES_TOTAL,
        Unit::Count,
        "Failed attempts to write and sync a batch of CDRs (kept and retried)."
    );
    describe_gauge!(
        CDRS_PENDING,
        Unit::Count,
        "CDRs handed to the writer and not yet on disk."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running build."
    );
    describe_counter!(
        SIP_MESSAGES_REJECTED_TOTAL,
        Unit::Count,
        "Inbound SIP messages refused by the wire layer, by reason."
    );
    describe_counter!(
        SIP_RESPONSES_DROPPED_TOTAL,
        Unit::Count,
        "Inbound SIP responses dropped, by reason."
    );
    describe_counter!(
        SIP_RETRANSMISSIONS_TOTAL,
        Unit::Count,
        "SIP retransmissions sent by our timers or received from peers."
    );
    describe_counter!(
        TRANSACTION_TIMEOUTS_TOTAL,
        Unit::Count,
        "Transactions ended by a timeout timer, by RFC 3261 timer letter."
    );
    describe_gauge!(
        TRANSACTIONS_ACTIVE,
        Unit::Count,
        "Live SIP transactions, by kind."
    );
    describe_gauge!(
        TRANSACTIONS_LINGERING,
        Unit::Count,
        "Live SIP transactions that only wait out a timer (RFC 6026 Accepted, Timer D/I/J/K)."
    );
    describe_gauge!(
        TRANSACTIONS_CAPACITY,
        Unit::Count,
        "The transaction table's bound (limits.max_transactions)."
    );
    describe_counter!(
        TRANSACTIONS_RETIRED_TOTAL,
        Unit::Count,
        "Lingering transactions retired before their timer to make room at the bound."
    );
    describe_gauge!(
        TCP_CONNECTIONS_ACTIVE,
        Unit::Count,
        "Open SIP TCP connections."
    );
    describe_counter!(
        TCP_CONNECTIONS_REJECTED_TOTAL,
        Unit::Count,
        "SIP TCP connections refused at the connection limit."
    );
    describe_counter!(
        MAILBOX_REJECTED_TOTAL,
        Unit::Count,
        "Messages refused because an actor's mailbox was full, by actor."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders what `f` records on a fresh local recorder set up as [`install`] does.
    fn render_with(f: impl FnOnce()) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            register_all("1.2.3-test");
            f();
        });
        handle.render()
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    #[test]
    fn every_interface_md_series_is_present_at_start() {
        let text = render_with(|| {});
        for s in [REGISTRATIONS_ACTIVE, CALLS_ACTIVE, CDRS_WRITTEN_TOTAL] {
            assert_eq!(value(&text, s), Some(0.0), "{s} in\n{text}");
        }
        assert_eq!(
            value(&text, "softswitch_build_info{version=\"1.2.3-test\"}"),
            Some(1.0)
        );
        for d in DISPOSITIONS {
            let s = format!("{CALLS_TOTAL}{{disposition=\"{d}\"}}");
            assert_eq!(value(&text, &s), Some(0.0), "{s}");
        }
        for m in METHODS {
            let s = format!("{SIP_REQUESTS_RECEIVED_TOTAL}{{method=\"{m}\"}}");
            assert_eq!(value(&text, &s), Some(0.0), "{s}");
        }
        for c in CLASSES {
            let s = format!("{SIP_RESPONSES_SENT_TOTAL}{{class=\"{c}\"}}");
            assert_eq!(value(&text, &s), Some(0.0), "{s}");
        }
        assert!(
            text.contains(&format!("# TYPE {CALL_SETUP_DURATION_SECONDS} histogram")),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("{CALL_SETUP_DURATION_SECONDS}_bucket{{le=\"+Inf\"}}")
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, &format!("{CALL_SETUP_DURATION_SECONDS}_count")),
            Some(0.0)
        );
        assert_eq!(
            value(&text, &format!("{CALL_SETUP_DURATION_SECONDS}_sum")),
            Some(0.0)
        );
    }

    #[test]
    fn our_own_series_are_present_at_start() {
        let text = render_with(|| {});
        for r in REJECT_REASONS {
            let s = format!("{SIP_MESSAGES_REJECTED_TOTAL}{{reason=\"{r}\"}}");
            assert_eq!(value(&text, &s), Some(0.0), "{s}");
        }
        for (name, label, set) in [
            (SIP_RESPONSES_DROPPED_TOTAL, "reason", &DROP_REASONS[..]),
            (SIP_RETRANSMISSIONS_TOTAL, "direction", &DIRECTIONS[..]),
            (TRANSACTION_TIMEOUTS_TOTAL, "timer", &TIMEOUT_TIMERS[..]),
            (TRANSACTIONS_ACTIVE, "kind", &TRANSACTION_KINDS[..]),
            (MAILBOX_REJECTED_TOTAL, "actor", &ACTORS[..]),
        ] {
            for v in set {
                let s = format!("{name}{{{label}=\"{v}\"}}");
                assert_eq!(value(&text, &s), Some(0.0), "{s}");
            }
        }
        assert_eq!(value(&text, TCP_CONNECTIONS_ACTIVE), Some(0.0));
        assert_eq!(value(&text, TRANSACTIONS_LINGERING), Some(0.0));
        assert_eq!(value(&text, TRANSACTIONS_RETIRED_TOTAL), Some(0.0));
        assert_eq!(value(&text, TCP_CONNECTIONS_REJECTED_TOTAL), Some(0.0));
        assert_eq!(value(&text, CDR_WRITE_FAILURES_TOTAL), Some(0.0));
        assert_eq!(value(&text, CDRS_PENDING), Some(0.0));
        assert!(
            text.contains(&format!("# HELP {CALLS_TOTAL} ")),
            "described"
        );
    }

    #[test]
    fn recording_functions_move_their_series() {
        let text = render_with(|| {
            sip_request_received("invite");
            sip_request_received("INVITE");
            sip_request_received("FOO");
            sip_response_sent(180);
            sip_response_sent(486);
            sip_response_sent(999);
            sip_message_rejected("too_large");
            sip_message_rejected("made_up");
            sip_response_dropped("no_transaction");
            retransmissions("sent", 3);
            transaction_timeout("B");
            transactions_active("invite_server", 7);
            tcp_connections_active(2);
            tcp_connection_rejected();
            registrations_active(4);
            calls_active(1);
            call_ended("busy");
            call_setup_duration(0.07);
            call_setup_duration(40.0);
            cdr_written();
            mailbox_rejected("call");
        });
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("softswitch_sip_requests_received_total{method=\"INVITE\"}"),
            Some(2.0)
        );
        assert_eq!(
            v("softswitch_sip_requests_received_total{method=\"other\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_responses_sent_total{class=\"1xx\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_responses_sent_total{class=\"4xx\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_responses_sent_total{class=\"other\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_messages_rejected_total{reason=\"too_large\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_messages_rejected_total{reason=\"other\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_responses_dropped_total{reason=\"no_transaction\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_sip_retransmissions_total{direction=\"sent\"}"),
            Some(3.0)
        );
        assert_eq!(
            v("softswitch_transaction_timeouts_total{timer=\"B\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("softswitch_transactions_active{kind=\"invite_server\"}"),
            Some(7.0)
        );
        assert_eq!(v(TCP_CONNECTIONS_ACTIVE), Some(2.0));
        assert_eq!(v(TCP_CONNECTIONS_REJECTED_TOTAL), Some(1.0));
        assert_eq!(v(REGISTRATIONS_ACTIVE), Some(4.0));
        assert_eq!(v(CALLS_ACTIVE), Some(1.0));
        assert_eq!(v("softswitch_calls_total{disposition=\"busy\"}"), Some(1.0));
        assert_eq!(v(CDRS_WRITTEN_TOTAL), Some(1.0));
        assert_eq!(
            v("softswitch_mailbox_rejected_total{actor=\"call\"}"),
            Some(1.0)
        );
        let h = CALL_SETUP_DURATION_SECONDS;
        assert_eq!(v(&format!("{h}_bucket{{le=\"0.05\"}}")), Some(0.0));
        assert_eq!(v(&format!("{h}_bucket{{le=\"0.1\"}}")), Some(1.0));
        assert_eq!(v(&format!("{h}_bucket{{le=\"30\"}}")), Some(1.0));
        assert_eq!(v(&format!("{h}_bucket{{le=\"+Inf\"}}")), Some(2.0));
        assert_eq!(v(&format!("{h}_count")), Some(2.0));
    }

    #[test]
    fn names_follow_prometheus_rules() {
        let counters = [
            CALLS_TOTAL,
            SIP_REQUESTS_RECEIVED_TOTAL,
            SIP_RESPONSES_SENT_TOTAL,
            CDRS_WRITTEN_TOTAL,
            SIP_MESSAGES_REJECTED_TOTAL,
            SIP_RESPONSES_DROPPED_TOTAL,
            SIP_RETRANSMISSIONS_TOTAL,
            TRANSACTION_TIMEOUTS_TOTAL,
            TCP_CONNECTIONS_REJECTED_TOTAL,
            MAILBOX_REJECTED_TOTAL,
            CDR_WRITE_FAILURES_TOTAL,
        ];
        let others = [
            REGISTRATIONS_ACTIVE,
            CALLS_ACTIVE,
            CALL_SETUP_DURATION_SECONDS,
            BUILD_INFO,
            TRANSACTIONS_ACTIVE,
            TCP_CONNECTIONS_ACTIVE,
            CDRS_PENDING,
        ];
        for n in counters.iter().chain(&others) {
            assert!(n.starts_with("softswitch_"), "{n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        assert!(counters.iter().all(|n| n.ends_with("_total")));
        assert!(others.iter().all(|n| !n.ends_with("_total")));
        for set in [
            &METHODS[..],
            &CLASSES,
            &DISPOSITIONS,
            &REJECT_REASONS,
            &ACTORS,
        ] {
            assert!(set.len() <= 15, "label sets stay small");
        }
        assert_eq!(method_label("notify"), "NOTIFY");
        assert_eq!(status_class(100), "1xx");
        assert_eq!(status_class(699), "6xx");
    }
}
