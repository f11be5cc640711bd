//! The pure rules of call forwarding (flows F9 and F10 of `spec/call-flows.md`, and
//! unconditional forwarding): where a call goes next, how far, and when it stops.
//!
//! A call's [`Chain`] starts at the callee as dialled and records every hop the switch
//! forwarded it on (who forwarded, to whom, why). Two kinds of hop:
//! - decided by the switch alone, before a phone rings ([`Chain::settle`]): the user has
//!   `forward_unconditional`, or is busy ([`Reached::busy`]) without call waiting and has
//!   `forward_busy`; busy without call waiting and no `forward_busy` ends the call with
//!   486 from the switch;
//! - decided by the ringing leg's outcome (the machine's `Command::Forward`): 486 from
//!   every binding with `forward_busy` set, or the user's ring timer with
//!   `forward_no_answer` set ([`Chain::forward`], then [`Chain::settle`] at the target).
//!
//! A chain is followed to [`MAX_FORWARD_HOPS`] hops (483 beyond), and a hop to a user the
//! chain has reached already is a loop (482): A → B → C → B ends there, not in a storm of
//! INVITEs. The dialled callee counts as reached.
//!
//! What the C-leg INVITE tells C (RFC 7044 History-Info with RFC 4458 `cause`, RFC 5806
//! Diversion): [`history_info`] and [`diversion`].

use crate::billing::ForwardReason;

/// How many forwarding hops one call follows. Five covers a desk phone forwarding to a
/// mobile forwarding to a colleague forwarding to voicemail with room to spare; a longer
/// chain is a configuration error more likely than a need, and each hop costs a leg.
pub const MAX_FORWARD_HOPS: usize = 5;

/// Why a chain stopped, and the status A gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The hop's target was reached before in this call (482 Loop Detected).
    Loop,
    /// [`MAX_FORWARD_HOPS`] hops already (483 Too Many Hops).
    TooManyHops,
    /// The user is busy, has no call waiting and no `forward_busy` (486 Busy Here, sent
    /// by the switch).
    Busy,
    /// The target is no user of ours (404 Not Found; config validation refuses such a
    /// target, so only a directory that changed under a call can get here).
    NotFound,
}

impl Stop {
    /// The final status A gets.
    pub fn status(self) -> u16 {
        match self {
            Stop::Loop => 482,
            Stop::TooManyHops => 483,
            Stop::Busy => 486,
            Stop::NotFound => 404,
        }
    }
}

/// What the switch knows of a user a call reaches, for [`Chain::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reached<'a> {
    /// `forward_unconditional`, as a user name.
    pub unconditional: Option<&'a str>,
    /// `forward_busy`, as a user name.
    pub busy_target: Option<&'a str>,
    /// The user is a party of a live call (see `CallRouter`'s busy rule).
    pub busy: bool,
    /// `call_waiting`: a busy user is offered the call anyway.
    pub call_waiting: bool,
}

/// One forwarding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The user whose rule forwarded the call.
    pub from: String,
    /// Where it went.
    pub to: String,
    /// Which rule.
    pub reason: ForwardReason,
}

/// Where a call has been forwarded so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    dialled: String,
    hops: Vec<Hop>,
}

impl Chain {
    /// A call to `dialled` (a user name), not forwarded yet.
    pub fn new(dialled: &str) -> Chain {
        Chain {
            dialled: dialled.to_string(),
            hops: Vec::new(),
        }
    }

    /// The user the call is at now: the last hop's target, else the dialled callee.
    pub fn current(&self) -> &str {
        self.hops.last().map_or(&self.dialled, |h| &h.to)
    }

    /// The callee as dialled.
    pub fn dialled(&self) -> &str {
        &self.dialled
    }

    /// Every hop, first first.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// The last hop (what the CDR's `forwarded_from` and `forward_reason` record: the
    /// rule that sent the call to the party it is at).
    pub fn last(&self) -> Option<&Hop> {
        self.hops.last()
    }

    fn reached(&self, user: &str) -> bool {
        self.dialled == user || self.hops.iter().any(|h| h.to == user)
    }

    /// Forwards the call from the current user to `to` for `reason`.
    pub fn forward(&mut self, to: &str, reason: ForwardReason) -> Result<(), Stop> {
        if self.reached(to) {
            return Err(Stop::Loop);
        }
        if self.hops.len() >= MAX_FORWARD_HOPS {
            return Err(Stop::TooManyHops);
        }
        let from = self.current().to_string();
        self.hops.push(Hop {
            from,
            to: to.to_string(),
            reason,
        });
        Ok(())
    }

    /// Follows, from the current user, the hops the switch decides without ringing
    /// anyone (unconditional first; then busy without call waiting: `forward_busy`, or
    /// [`Stop::Busy`]) until a user whose phones are to ring. `user` says what is known
    /// of a user (`None`: no such user). Bounded by [`MAX_FORWARD_HOPS`].
    pub fn settle<'a>(&mut self, user: impl Fn(&str) -> Option<Reached<'a>>) -> Result<(), Stop> {
        loop {
            let Some(r) = user(self.current()) else {
                return Err(Stop::NotFound);
            };
            if let Some(to) = r.unconditional {
                self.forward(to, ForwardReason::Unconditional)?;
            } else if r.busy && !r.call_waiting {
                match r.busy_target {
                    Some(to) => self.forward(to, ForwardReason::Busy)?,
                    None => return Err(Stop::Busy),
                }
            } else {
                return Ok(());
            }
        }
    }
}

/// The user a forwarding target names in `domain`: a user name as written, or the user
/// part of a `sip:`/`sips:` URI whose host is `domain` (any port, any parameters).
/// `None` for a URI of another host (the switch would be an open relay) or without a
/// user part.
pub fn target_user<'a>(target: &'a str, domain: &str) -> Option<&'a str> {
    let t = target.trim();
    let lower = t.get(..5).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("sip:") {
        &t[4..]
    } else if lower == "sips:" {
        &t[5..]
    } else {
        return (!t.is_empty() && !t.contains(['@', ':', ';', ' '])).then_some(t);
    };
    let (user, host) = rest.split_once('@')?;
    let host = host.split([';', '?', '>']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    (!user.is_empty() && host.eq_ignore_ascii_case(domain)).then_some(user)
}

/// RFC 5806 §2 `diversion-reason` of a rule.
pub fn diversion_reason(reason: ForwardReason) -> &'static str {
    match reason {
        ForwardReason::Busy => "user-busy",
        ForwardReason::NoAnswer => "no-answer",
        ForwardReason::Unconditional => "unconditional",
    }
}

/// RFC 4458 §3 `cause` of a rule: 486 busy, 408 no answer, 302 unconditional.
pub fn cause(reason: ForwardReason) -> u16 {
    match reason {
        ForwardReason::Busy => 486,
        ForwardReason::NoAnswer => 408,
        ForwardReason::Unconditional => 302,
    }
}

/// The `Diversion` header values (RFC 5806) of a C-leg INVITE, most recent first (§4:
/// each hop adds its value at the top), each naming the diverting user with its
/// `reason` and `counter=1`.
pub fn diversion(chain: &Chain, domain: &str) -> Vec<String> {
    chain
        .hops
        .iter()
        .rev()
        .map(|h| {
            format!(
                "<sip:{}@{domain}>;reason={};counter=1",
                h.from,
                diversion_reason(h.reason)
            )
        })
        .collect()
}

/// The `History-Info` header values (RFC 7044) of a C-leg INVITE: the dialled target at
/// index 1, each forwarding target at the next index below the one before (1.1, 1.1.1,
/// ...), its URI with the RFC 4458 `cause` of the rule that retargeted to it, and `mp`
/// naming the index it was retargeted from (§9.4: a change of the target user).
pub fn history_info(chain: &Chain, domain: &str) -> Vec<String> {
    let mut index = String::from("1");
    let mut out = vec![format!("<sip:{}@{domain}>;index=1", chain.dialled)];
    for h in &chain.hops {
        let from = index.clone();
        index.push_str(".1");
        out.push(format!(
            "<sip:{}@{domain};cause={}>;index={index};mp={from}",
            h.to,
            cause(h.reason)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default, Clone)]
    struct U {
        unconditional: Option<&'static str>,
        busy_target: Option<&'static str>,
        busy: bool,
        call_waiting: bool,
    }

    fn dir(users: &[(&'static str, U)]) -> HashMap<&'static str, U> {
        users.iter().cloned().collect()
    }

    fn settle(chain: &mut Chain, d: &HashMap<&'static str, U>) -> Result<(), Stop> {
        chain.settle(|u| {
            d.get(u).map(|u| Reached {
                unconditional: u.unconditional,
                busy_target: u.busy_target,
                busy: u.busy,
                call_waiting: u.call_waiting,
            })
        })
    }

    #[test]
    fn a_user_without_rules_is_rung() {
        let d = dir(&[("bob", U::default())]);
        let mut c = Chain::new("bob");
        assert_eq!(settle(&mut c, &d), Ok(()));
        assert_eq!(c.current(), "bob");
        assert!(c.last().is_none());
    }

    #[test]
    fn unconditional_goes_on_before_anything_rings() {
        let d = dir(&[
            (
                "bob",
                U {
                    unconditional: Some("carol"),
                    ..U::default()
                },
            ),
            ("carol", U::default()),
        ]);
        let mut c = Chain::new("bob");
        assert_eq!(settle(&mut c, &d), Ok(()));
        assert_eq!(c.current(), "carol");
        let h = c.last().unwrap();
        assert_eq!(
            (h.from.as_str(), h.reason),
            ("bob", ForwardReason::Unconditional)
        );
    }

    /// Busy without call waiting: 486 from the switch, or `forward_busy`; with call
    /// waiting the user is rung.
    #[test]
    fn busy_without_call_waiting() {
        let busy = U {
            busy: true,
            ..U::default()
        };
        let d = dir(&[("bob", busy.clone())]);
        assert_eq!(settle(&mut Chain::new("bob"), &d), Err(Stop::Busy));
        assert_eq!(Stop::Busy.status(), 486);
        let d = dir(&[
            (
                "bob",
                U {
                    busy_target: Some("carol"),
                    ..busy.clone()
                },
            ),
            ("carol", U::default()),
        ]);
        let mut c = Chain::new("bob");
        assert_eq!(settle(&mut c, &d), Ok(()));
        assert_eq!(c.last().map(|h| h.reason), Some(ForwardReason::Busy));
        let d = dir(&[(
            "bob",
            U {
                call_waiting: true,
                busy_target: Some("carol"),
                ..busy
            },
        )]);
        let mut c = Chain::new("bob");
        assert_eq!(settle(&mut c, &d), Ok(()));
        assert_eq!(c.current(), "bob");
    }

    /// A → B → C → B: the hop back to B is a loop (482), one hop followed.
    #[test]
    fn a_loop_ends_at_the_first_repeat() {
        let to = |t| U {
            unconditional: Some(t),
            ..U::default()
        };
        let d = dir(&[("bob", to("carol")), ("carol", to("bob"))]);
        let mut c = Chain::new("bob");
        assert_eq!(settle(&mut c, &d), Err(Stop::Loop));
        assert_eq!(c.hops().len(), 1);
        assert_eq!(Stop::Loop.status(), 482);
        // A runtime hop (busy, no answer) back to someone reached is one too.
        let mut c = Chain::new("bob");
        c.forward("carol", ForwardReason::NoAnswer).unwrap();
        assert_eq!(c.forward("bob", ForwardReason::Busy), Err(Stop::Loop));
    }

    #[test]
    fn a_chain_is_followed_to_the_bound() {
        let names = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
        let d: HashMap<&'static str, U> = names
            .iter()
            .zip(names.iter().skip(1))
            .map(|(a, b)| {
                (
                    *a,
                    U {
                        unconditional: Some(b),
                        ..U::default()
                    },
                )
            })
            .chain([("u7", U::default())])
            .collect();
        let mut c = Chain::new("u0");
        assert_eq!(settle(&mut c, &d), Err(Stop::TooManyHops));
        assert_eq!(c.hops().len(), MAX_FORWARD_HOPS);
        let mut c = Chain::new("u2");
        assert_eq!(settle(&mut c, &d), Ok(()), "five hops are followed");
        assert_eq!(c.current(), "u7");
    }

    #[test]
    fn a_target_that_is_no_user_is_not_found() {
        let d = dir(&[(
            "bob",
            U {
                unconditional: Some("ghost"),
                ..U::default()
            },
        )]);
        assert_eq!(settle(&mut Chain::new("bob"), &d), Err(Stop::NotFound));
    }

    #[test]
    fn targets_are_users_or_uris_of_our_domain() {
        let d = "example.test";
        assert_eq!(target_user("carol", d), Some("carol"));
        assert_eq!(target_user("sip:carol@example.test", d), Some("carol"));
        assert_eq!(
            target_user("SIP:carol@EXAMPLE.test:5060;transport=tcp", d),
            Some("carol")
        );
        assert_eq!(target_user("sips:carol@example.test", d), Some("carol"));
        assert_eq!(target_user("sip:carol@elsewhere.example", d), None);
        assert_eq!(target_user("sip:example.test", d), None);
        assert_eq!(target_user("sip:@example.test", d), None);
        assert_eq!(target_user("carol@example.test", d), None);
        assert_eq!(target_user("", d), None);
    }

    #[test]
    fn the_c_leg_headers_name_the_diverting_user() {
        let mut c = Chain::new("bob");
        c.forward("carol", ForwardReason::Busy).unwrap();
        assert_eq!(
            diversion(&c, "example.test"),
            ["<sip:bob@example.test>;reason=user-busy;counter=1"]
        );
        assert_eq!(
            history_info(&c, "example.test"),
            [
                "<sip:bob@example.test>;index=1",
                "<sip:carol@example.test;cause=486>;index=1.1;mp=1"
            ]
        );
        c.forward("dave", ForwardReason::NoAnswer).unwrap();
        assert_eq!(
            diversion(&c, "example.test"),
            [
                "<sip:carol@example.test>;reason=no-answer;counter=1",
                "<sip:bob@example.test>;reason=user-busy;counter=1"
            ]
        );
        assert_eq!(
            history_info(&c, "example.test")[2],
            "<sip:dave@example.test;cause=408>;index=1.1.1;mp=1.1"
        );
    }

    /// The machine's side of forwarding (F9, F10), flow by flow.
    mod machine {
        use crate::call::*;
        use std::sync::Arc;
        use std::time::{Duration, SystemTime};

        const T: CallTimers = CallTimers {
            ring: Duration::from_secs(20),
            ack_wait: Duration::from_secs(32),
            bye_wait: Duration::from_secs(32),
        };
        const RING: Duration = Duration::from_secs(3);

        fn now() -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        }

        fn start(on_busy: bool, on_no_answer: bool) -> (CallMachine, Vec<Command>) {
            let mut m = CallMachine::new(Arc::new(T));
            m.set_callee(CalleeRules {
                ring: RING,
                on_busy,
                on_no_answer,
            });
            let c = m.handle(
                Event::Start {
                    targets: 1,
                    offer: Some(b"v=0".to_vec()),
                },
                now(),
            );
            (m, c)
        }

        fn fin(m: &mut CallMachine, leg: u32, status: u16) -> Vec<Command> {
            m.handle(
                Event::Final {
                    leg: LegId(leg),
                    status,
                    sdp: None,
                },
                now(),
            )
        }

        const PLAIN: CalleeRules = CalleeRules {
            ring: Duration::from_secs(7),
            on_busy: false,
            on_no_answer: false,
        };

        /// The callee's own ring time arms the ring timer.
        #[test]
        fn the_ring_timer_is_the_callees() {
            let (_, c) = start(false, false);
            assert!(c.contains(&Command::StartTimer(CallTimer::Ring, RING)));
        }

        /// F9: B's 486 is not relayed; the forward's C-leg rings after a 181, its 180
        /// is relayed, its 200 connects the call.
        #[test]
        fn busy_forwards_and_c_answers() {
            let (mut m, _) = start(true, false);
            let c = fin(&mut m, 1, 486);
            assert!(
                !c.iter().any(|c| matches!(c, Command::FinalToA { .. })),
                "{c:?}"
            );
            assert!(c.contains(&Command::Forward {
                reason: ForwardReason::Busy
            }));
            let c = m.handle(
                Event::Forwarded {
                    targets: 1,
                    rules: PLAIN,
                },
                now(),
            );
            assert_eq!(
                c,
                vec![
                    Command::ProvisionalToA {
                        status: 181,
                        sdp: None
                    },
                    Command::InviteB { leg: LegId(2) },
                    Command::StartTimer(CallTimer::Ring, PLAIN.ring),
                ]
            );
            let c = m.handle(
                Event::Provisional {
                    leg: LegId(2),
                    status: 180,
                    sdp: None,
                },
                now(),
            );
            assert_eq!(
                c,
                vec![Command::ProvisionalToA {
                    status: 180,
                    sdp: None
                }]
            );
            let c = fin(&mut m, 2, 200);
            assert!(c.contains(&Command::FinalToA {
                status: 200,
                sdp: None
            }));
            m.handle(Event::AckFromA { sdp: None }, now());
            m.handle(Event::Bye { leg: LegId::A }, now());
            let c = m.handle(Event::ByeDone { leg: LegId(2) }, now());
            let o = c
                .iter()
                .find_map(|c| match c {
                    Command::Finish(o) => Some(*o),
                    _ => None,
                })
                .unwrap();
            assert_eq!(o.connected_leg, Some(LegId(2)));
            assert_eq!(o.disposition, Disposition::Answered);
        }

        /// Without `forward_busy` the 486 is relayed, as F6.
        #[test]
        fn busy_without_a_target_is_relayed() {
            let (mut m, _) = start(false, true);
            let c = fin(&mut m, 1, 486);
            assert!(c.contains(&Command::FinalToA {
                status: 486,
                sdp: None
            }));
        }

        /// F10: the ring timer CANCELs B and asks for C; B's 487 afterwards decides
        /// nothing; C's failure is what A gets.
        #[test]
        fn no_answer_cancels_b_then_c_fails() {
            let (mut m, _) = start(false, true);
            m.handle(
                Event::Provisional {
                    leg: LegId(1),
                    status: 180,
                    sdp: None,
                },
                now(),
            );
            let c = m.handle(Event::Timer(CallTimer::Ring), now());
            assert_eq!(
                c,
                vec![
                    Command::CancelB { leg: LegId(1) },
                    Command::Forward {
                        reason: ForwardReason::NoAnswer
                    }
                ]
            );
            m.handle(
                Event::Forwarded {
                    targets: 1,
                    rules: PLAIN,
                },
                now(),
            );
            assert!(fin(&mut m, 1, 487).is_empty(), "B's 487 decides nothing");
            let c = fin(&mut m, 2, 603);
            assert!(c.contains(&Command::FinalToA {
                status: 603,
                sdp: None
            }));
            assert!(c.iter().any(|c| matches!(c, Command::Finish(_))));
        }

        /// A forward that cannot go on (480 target not registered, a loop) ends the
        /// call with that status once the cancelled B-leg settled.
        #[test]
        fn forward_failed_ends_the_call() {
            let (mut m, _) = start(false, true);
            m.handle(Event::Timer(CallTimer::Ring), now());
            let c = m.handle(Event::ForwardFailed { status: 480 }, now());
            assert!(c.contains(&Command::FinalToA {
                status: 480,
                sdp: None
            }));
            assert!(!c.iter().any(|c| matches!(c, Command::Finish(_))));
            let c = fin(&mut m, 1, 487);
            let o = c
                .iter()
                .find_map(|c| match c {
                    Command::Finish(o) => Some(*o),
                    _ => None,
                })
                .unwrap();
            assert_eq!((o.sip_status, o.disposition), (480, Disposition::NoAnswer));
            assert_eq!(o.hangup_by, HangupBy::Switch);
        }

        /// Ring timer without `forward_no_answer`: 480, as F8.
        #[test]
        fn no_answer_without_a_target_is_480() {
            let (mut m, _) = start(true, false);
            let c = m.handle(Event::Timer(CallTimer::Ring), now());
            assert!(c.contains(&Command::FinalToA {
                status: 480,
                sdp: None
            }));
        }
    }
}
