//! Session timers (RFC 4028) on one leg, as a pure core (sans-IO: time is an argument,
//! nothing here sends or sleeps): what the Leg actor ([`super::leg`]) asks when it
//! answers or sends a request that may refresh its dialog's session, and when it must
//! refresh the session itself or give it up.
//!
//! Each leg is its own dialog and its own negotiation: on the A-leg the switch is the
//! UAS of the caller's INVITE (§9), on a B-leg the UAC of its INVITE (§7); the caller's
//! `Session-Expires` never reaches a B-leg, which gets the switch's own
//! ([`Policy`], `sip.session_expires_s` and `sip.min_se_s`).
//!
//! - §4, §5: `Session-Expires: <delta>[;refresher=uac|uas]` and `Min-SE: <delta>` are
//!   read by [`Asked::of`], with `timer` in `Supported` or `Require`; a malformed value
//!   counts as absent.
//! - §6, §9: a request whose Session-Expires is below the switch's Min-SE is refused
//!   422 with our `Min-SE` when its sender supports `timer` ([`TooSmall`]); one that
//!   does not support it cannot act on a 422, so its interval is raised to our minimum
//!   instead (RFC 4028 erratum 1687) and the switch refreshes. [`as_uas`] picks the
//!   interval (the request's, capped at ours, never below either Min-SE; ours when the
//!   request names none) and the refresher: the one the request names, else its sender
//!   when it supports `timer` (a desk phone that insists on timers refreshes its own
//!   session), else the switch (a phone that cannot refresh is refreshed). The 2xx
//!   carries `Session-Expires` with the refresher, and `Require: timer` when the sender
//!   supports it ([`answer_headers`]).
//! - §7.1, §7.4: a request the switch sends that may refresh (the B-leg INVITE, a
//!   relayed re-INVITE or UPDATE, our own refresh) carries `Supported: timer`, our
//!   `Session-Expires` and `Min-SE` ([`request_headers`]).
//! - §7.2: its 2xx says who refreshes ([`as_uac`]); a 2xx without `Session-Expires` is
//!   from a party that does not do session timers, so the switch keeps the session
//!   alive itself with the interval it asked for (the role RFC 4028 gives the
//!   supporting side: "takes the refresher role where the far phone cannot").
//! - §10: when to refresh and when to give a session up is the call machine's
//!   (`softswitch_actors::call`, `session.rs`: half the interval; `SE - min(32 s, SE/3)`
//!   after the last refresh), fed each leg's refreshes: every 2xx to a re-INVITE or
//!   UPDATE on the leg, in either direction, and the INVITE's 2xx that set it up.

use crate::wire::{Common, Header};
pub use softswitch_actors::call::{Refresher, Session};

/// The option tag of session timers (§3).
pub const OPTION_TAG: &str = "timer";

/// The smallest `Min-SE` RFC 4028 allows on the wire (§4: 90 seconds).
pub const RFC_MIN_SE: u32 = 90;

/// The switch's own session-timer values (`[sip]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The interval the switch asks for and caps requests at (`session_expires_s`).
    pub session_expires: u32,
    /// The shortest interval it accepts (`min_se_s`; our `Min-SE`).
    pub min_se: u32,
}

/// The `refresher` parameter: the UAC or the UAS of the request it is in (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `refresher=uac`.
    Uac,
    /// `refresher=uas`.
    Uas,
}

/// What a request or a 2xx says about session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asked {
    /// `Session-Expires`, seconds.
    pub session_expires: Option<u32>,
    /// Its `refresher` parameter.
    pub refresher: Option<Role>,
    /// `Min-SE`, seconds.
    pub min_se: Option<u32>,
    /// `timer` is in `Supported` or `Require`.
    pub timer: bool,
}

fn delta_seconds(v: &str) -> Option<u32> {
    let v = v.trim();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u32>().unwrap_or(u32::MAX))
}

impl Asked {
    /// Reads the session-timer headers of a message.
    pub fn of(common: &Common) -> Asked {
        let mut asked = Asked {
            timer: common
                .tokens("Supported")
                .chain(common.tokens("Require"))
                .any(|t| t.eq_ignore_ascii_case(OPTION_TAG)),
            ..Asked::default()
        };
        if let Some(se) = common.header("Session-Expires") {
            let mut parts = se.split(';');
            asked.session_expires = parts.next().and_then(delta_seconds);
            if asked.session_expires.is_some() {
                asked.refresher = parts.find_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    if !name.trim().eq_ignore_ascii_case("refresher") {
                        return None;
                    }
                    match value.trim() {
                        v if v.eq_ignore_ascii_case("uac") => Some(Role::Uac),
                        v if v.eq_ignore_ascii_case("uas") => Some(Role::Uas),
                        _ => None,
                    }
                });
            }
        }
        asked.min_se = common
            .header("Min-SE")
            .and_then(|v| v.split(';').next())
            .and_then(delta_seconds);
        asked
    }
}

/// The request's interval is below the switch's minimum: 422 with this `Min-SE` (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall {
    /// Our `Min-SE`.
    pub min_se: u32,
}

/// The switch as the UAS of a request that may refresh (§9): the session it answers
/// with, or 422.
pub fn as_uas(asked: &Asked, policy: &Policy) -> Result<Session, TooSmall> {
    let floor = policy.min_se.max(asked.min_se.unwrap_or(0));
    let interval = match asked.session_expires {
        Some(se) if se < policy.min_se && asked.timer => {
            return Err(TooSmall {
                min_se: policy.min_se,
            })
        }
        Some(se) => se.min(policy.session_expires).max(floor),
        None => policy.session_expires.max(floor),
    };
    let refresher = match (asked.refresher, asked.timer) {
        (Some(Role::Uac), true) => Refresher::Peer,
        (Some(Role::Uas), _) => Refresher::Switch,
        (None, true) => Refresher::Peer,
        // A sender without `timer` cannot be the refresher, whatever it wrote.
        (_, false) => Refresher::Switch,
    };
    Ok(Session {
        interval,
        refresher,
    })
}

/// The switch as the UAC of a request that may refresh, at its 2xx (§7.2): `sent` is
/// the interval the request asked for.
pub fn as_uac(answer: &Asked, sent: u32) -> Session {
    match answer.session_expires {
        Some(se) => Session {
            interval: se.max(1),
            refresher: match answer.refresher {
                Some(Role::Uas) => Refresher::Peer,
                Some(Role::Uac) | None => Refresher::Switch,
            },
        },
        // The far side does no session timers: the switch keeps the session alive.
        None => Session {
            interval: sent,
            refresher: Refresher::Switch,
        },
    }
}

/// The headers of our 2xx as the UAS of the request that negotiated this session
/// (§9): `Session-Expires` with the refresher (`uac` is the request's sender), and
/// `Require: timer` when that sender supports it.
pub fn answer_headers(session: &Session, sender_supports: bool) -> Vec<Header> {
    let role = match session.refresher {
        Refresher::Peer => "uac",
        Refresher::Switch => "uas",
    };
    let mut h = vec![Header::new(
        "Session-Expires",
        format!("{};refresher={role}", session.interval),
    )];
    if sender_supports {
        h.push(Header::new("Require", OPTION_TAG));
    }
    h
}

/// Whether the message's `Allow` lists UPDATE (`None` without an Allow): the switch
/// refreshes with UPDATE (no body, RFC 3311) where the peer takes it, else with a
/// re-INVITE carrying the last SDP it sent on the leg (no change of session: same
/// `o=` version, RFC 3264 §8).
pub fn allows_update(common: &Common) -> Option<bool> {
    common.header("Allow")?;
    Some(
        common
            .tokens("Allow")
            .any(|m| m.eq_ignore_ascii_case("UPDATE")),
    )
}

/// The headers of a request the switch sends that may refresh (§7.1, §7.4):
/// `Supported: timer`, `Session-Expires` (with the refresher when the leg has one:
/// `uac` is the switch), `Min-SE`.
pub fn request_headers(
    interval: u32,
    refresher: Option<Refresher>,
    policy: &Policy,
) -> Vec<Header> {
    let se = match refresher {
        Some(Refresher::Switch) => format!("{interval};refresher=uac"),
        Some(Refresher::Peer) => format!("{interval};refresher=uas"),
        None => interval.to_string(),
    };
    vec![
        Header::new("Supported", OPTION_TAG),
        Header::new("Session-Expires", se),
        Header::new("Min-SE", policy.min_se.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        session_expires: 1800,
        min_se: 90,
    };

    fn asked(headers: &str) -> Asked {
        let text = format!(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{headers}"
        );
        match crate::wire::parse_message(text.as_bytes(), b"") {
            Ok(crate::wire::Message::Request(r)) => Asked::of(&r.common),
            _ => panic!("test request does not parse"),
        }
    }

    #[test]
    fn the_headers_are_read_with_their_parameters_and_compact_forms() {
        let a = asked(
            "Supported: 100rel, timer\r\nSession-Expires: 600;refresher=uac\r\nMin-SE: 120\r\n",
        );
        assert_eq!(
            a,
            Asked {
                session_expires: Some(600),
                refresher: Some(Role::Uac),
                min_se: Some(120),
                timer: true
            }
        );
        let a = asked("k: timer\r\nx: 300; Refresher = UAS\r\n");
        assert_eq!(
            (a.session_expires, a.refresher, a.timer),
            (Some(300), Some(Role::Uas), true)
        );
        // Malformed values count as absent; Require: timer counts as support.
        let a = asked("Require: timer\r\nSession-Expires: soon\r\nMin-SE: -1\r\n");
        assert_eq!((a.session_expires, a.min_se, a.timer), (None, None, true));
        assert_eq!(asked(""), Asked::default());
    }

    #[test]
    fn below_our_min_se_is_422_for_a_sender_that_supports_timer_and_raised_otherwise() {
        let a = asked("Supported: timer\r\nSession-Expires: 60\r\n");
        assert_eq!(as_uas(&a, &POLICY), Err(TooSmall { min_se: 90 }));
        // Without `timer` a 422 would only fail the call: raised, and the switch refreshes.
        let a = asked("Session-Expires: 60\r\n");
        assert_eq!(
            as_uas(&a, &POLICY),
            Ok(Session {
                interval: 90,
                refresher: Refresher::Switch
            })
        );
        // The retry after the 422 (Min-SE: 90, Session-Expires: 90) is accepted.
        let a = asked("Supported: timer\r\nSession-Expires: 90\r\nMin-SE: 90\r\n");
        assert_eq!(as_uas(&a, &POLICY).map(|s| s.interval), Ok(90));
    }

    #[test]
    fn the_uas_interval_is_capped_at_ours_and_never_below_either_min_se() {
        let a = asked("Supported: timer\r\nSession-Expires: 7200\r\n");
        assert_eq!(as_uas(&a, &POLICY).map(|s| s.interval), Ok(1800));
        let a = asked("Supported: timer\r\n");
        assert_eq!(as_uas(&a, &POLICY).map(|s| s.interval), Ok(1800));
        let small = Policy {
            session_expires: 100,
            min_se: 90,
        };
        let a = asked("Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 300\r\n");
        assert_eq!(as_uas(&a, &small).map(|s| s.interval), Ok(300));
    }

    #[test]
    fn the_refresher_is_the_one_named_else_a_sender_that_supports_timer_else_the_switch() {
        let r = |h: &str| as_uas(&asked(h), &POLICY).map(|s| s.refresher);
        assert_eq!(
            r("Supported: timer\r\nSession-Expires: 900;refresher=uac\r\n"),
            Ok(Refresher::Peer)
        );
        assert_eq!(
            r("Supported: timer\r\nSession-Expires: 900;refresher=uas\r\n"),
            Ok(Refresher::Switch)
        );
        assert_eq!(
            r("Supported: timer\r\nSession-Expires: 900\r\n"),
            Ok(Refresher::Peer)
        );
        assert_eq!(
            r("Session-Expires: 900;refresher=uac\r\n"),
            Ok(Refresher::Switch)
        );
        assert_eq!(r(""), Ok(Refresher::Switch));
    }

    #[test]
    fn a_2xx_names_the_refresher_and_one_without_session_expires_leaves_it_to_us() {
        let s = as_uac(
            &asked("Require: timer\r\nSession-Expires: 600;refresher=uas\r\n"),
            1800,
        );
        assert_eq!(
            s,
            Session {
                interval: 600,
                refresher: Refresher::Peer
            }
        );
        let s = as_uac(&asked("Session-Expires: 600;refresher=uac\r\n"), 1800);
        assert_eq!(s.refresher, Refresher::Switch);
        let s = as_uac(&asked(""), 1800);
        assert_eq!(
            s,
            Session {
                interval: 1800,
                refresher: Refresher::Switch
            }
        );
    }

    #[test]
    fn the_answer_and_request_headers_say_who_refreshes() {
        let peer = Session {
            interval: 600,
            refresher: Refresher::Peer,
        };
        let h = answer_headers(&peer, true);
        assert_eq!(h[0].value, "600;refresher=uac");
        assert_eq!((&*h[1].name, &*h[1].value), ("Require", "timer"));
        let us = Session {
            interval: 90,
            refresher: Refresher::Switch,
        };
        assert_eq!(
            answer_headers(&us, false).len(),
            1,
            "no Require for a sender without timer"
        );
        let h = request_headers(1800, None, &POLICY);
        let pairs: Vec<(&str, &str)> = h.iter().map(|h| (&*h.name, &*h.value)).collect();
        assert_eq!(
            pairs,
            [
                ("Supported", "timer"),
                ("Session-Expires", "1800"),
                ("Min-SE", "90")
            ]
        );
        assert_eq!(
            request_headers(90, Some(Refresher::Switch), &POLICY)[1].value,
            "90;refresher=uac"
        );
        assert_eq!(
            request_headers(90, Some(Refresher::Peer), &POLICY)[1].value,
            "90;refresher=uas"
        );
    }
}
