//! The bindings of one AOR and the pure rules that change them: RFC 3261 §10.3 steps 6–8,
//! RFC 5626 §6 (`+sip.instance` replaces instead of piling up) and RFC 3327 (Path).
//!
//! [`apply`] computes the complete new binding set of an AOR from its current one and a
//! [`RegisterUpdate`], or the reason the whole request fails: §10.3 says the updates are
//! committed only if every one of them succeeds, so nothing is half-applied. The actor
//! ([`crate::registrar`]) commits the result after the journal has stored it.
//!
//! Rules, in the order applied:
//! - expired bindings are dropped first (an expiry timer may lag by a tick);
//! - a contact's expiry is its `expires` parameter, else the Expires header, else
//!   [`Policy::default_expires`]; nonzero and below [`Policy::min_expires`] fails the
//!   request (423); above [`Policy::max_expires`] it is shortened;
//! - a contact matches a binding by [`ContactSpec::key`]; with the same Call-ID, a CSeq
//!   equal to the stored one is a retransmission (answered with the current bindings, not
//!   applied) and a lower one fails the request ([`RegisterError::OutOfOrder`]);
//! - expiry 0 removes the matched binding; otherwise it is refreshed or added;
//! - `*` removes every binding, under the same Call-ID/CSeq rule;
//! - beyond [`Policy::max_contacts`], the bindings this request did not touch are removed,
//!   soonest-expiring first (as Asterisk's `remove_existing`): a phone that restarted with
//!   a new contact is never locked out by its own stale bindings. Only a request that by
//!   itself carries more than the maximum fails.

use crate::port::{ContactSet, ContactSpec, Policy, RegisterError, RegisterUpdate, Source};
use serde::{Deserialize, Serialize};

/// One binding of an AOR to a contact (RFC 3261 §10.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The contact URI as written.
    pub uri: String,
    /// Its header parameters as written, without `expires`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub params: String,
    /// The comparison key ([`ContactSpec::key`]).
    pub key: u64,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// The Call-ID of the REGISTER that last refreshed it.
    pub call_id: String,
    /// And its CSeq.
    pub cseq: u32,
    /// Where that REGISTER came from.
    pub source: Source,
    /// Path values (RFC 3327), outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// The User-Agent of the registering phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Binding {
    /// Seconds left, rounded up; 0 once expired.
    pub fn remaining_s(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }

    /// True once expired.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// The `q` parameter (RFC 3261 §20.10) in thousandths, 1000 when absent or invalid.
    pub fn q_millis(&self) -> u16 {
        self.params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .map_or(1000, |q| (q * 1000.0).round() as u16)
    }
}

/// The outcome of a REGISTER that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to change (a query, or a retransmission): answer with the current set.
    Unchanged,
    /// The new binding set, to persist and then commit.
    Changed(Vec<Binding>),
}

/// §10.3 steps 6–8: the new binding set for `current` after `u`.
pub fn apply(
    current: &[Binding],
    u: &RegisterUpdate,
    policy: &Policy,
) -> Result<Applied, RegisterError> {
    let now = u.now_ms;
    let live: Vec<&Binding> = current.iter().filter(|b| !b.is_expired(now)).collect();
    let expired_any = live.len() != current.len();
    let mut next: Vec<Binding> = live.iter().map(|b| (*b).clone()).collect();
    match &u.contacts {
        ContactSet::Query => Ok(if expired_any {
            Applied::Changed(next)
        } else {
            Applied::Unchanged
        }),
        ContactSet::Wildcard => {
            let mut retransmission = false;
            for b in &live {
                if b.call_id == u.call_id {
                    if u.cseq < b.cseq {
                        return Err(RegisterError::OutOfOrder);
                    }
                    retransmission |= u.cseq == b.cseq;
                }
            }
            if retransmission || (next.is_empty() && !expired_any) {
                return Ok(Applied::Unchanged);
            }
            Ok(Applied::Changed(Vec::new()))
        }
        ContactSet::List(contacts) => {
            let mut touched: Vec<u64> = Vec::with_capacity(contacts.len());
            let mut changed = expired_any;
            let mut adding = 0usize;
            for c in contacts {
                let expires = expiry_of(c, u, policy)?;
                if expires > 0 {
                    adding += 1;
                }
                let existing = next.iter().position(|b| b.key == c.key);
                if let Some(i) = existing {
                    let b = &next[i];
                    if b.call_id == u.call_id && u.cseq <= b.cseq {
                        if u.cseq < b.cseq {
                            return Err(RegisterError::OutOfOrder);
                        }
                        // The same request again: already applied.
                        touched.push(c.key);
                        continue;
                    }
                }
                touched.push(c.key);
                changed = true;
                match (existing, expires) {
                    (Some(i), 0) => {
                        next.remove(i);
                    }
                    (None, 0) => {}
                    (Some(i), e) => next[i] = binding_from(c, u, e),
                    (None, e) => next.push(binding_from(c, u, e)),
                }
            }
            if adding > policy.max_contacts {
                return Err(RegisterError::TooManyContacts {
                    max: policy.max_contacts,
                });
            }
            while next.len() > policy.max_contacts {
                // Drop the untouched binding that expires soonest.
                let victim = next
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| !touched.contains(&b.key))
                    .min_by_key(|(_, b)| b.expires_at_ms)
                    .map(|(i, _)| i);
                match victim {
                    Some(i) => {
                        next.remove(i);
                    }
                    None => break,
                }
            }
            Ok(if changed {
                // Committed sets live long: no spare capacity (a Binding is ~200 bytes).
                next.shrink_to_fit();
                Applied::Changed(next)
            } else {
                Applied::Unchanged
            })
        }
    }
}

/// The earliest expiry among `bindings`, Unix milliseconds.
pub fn next_expiry(bindings: &[Binding]) -> Option<u64> {
    bindings.iter().map(|b| b.expires_at_ms).min()
}

/// The bindings still live at `now_ms`, or `None` when none expired.
pub fn expire(bindings: &[Binding], now_ms: u64) -> Option<Vec<Binding>> {
    if bindings.iter().any(|b| b.is_expired(now_ms)) {
        Some(
            bindings
                .iter()
                .filter(|b| !b.is_expired(now_ms))
                .cloned()
                .collect(),
        )
    } else {
        None
    }
}

fn expiry_of(c: &ContactSpec, u: &RegisterUpdate, policy: &Policy) -> Result<u32, RegisterError> {
    let e = c
        .expires
        .or(u.expires_header)
        .unwrap_or(policy.default_expires);
    if e == 0 {
        return Ok(0);
    }
    if e < policy.min_expires {
        return Err(RegisterError::IntervalTooBrief {
            min: policy.min_expires,
        });
    }
    Ok(e.min(policy.max_expires))
}

fn binding_from(c: &ContactSpec, u: &RegisterUpdate, expires_s: u32) -> Binding {
    Binding {
        uri: c.uri.clone(),
        params: c.params.clone(),
        key: c.key,
        expires_at_ms: u.now_ms.saturating_add(u64::from(expires_s) * 1000),
        call_id: u.call_id.clone(),
        cseq: u.cseq,
        source: u.source,
        path: u.path.clone(),
        user_agent: u.user_agent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::TransportKind;

    const NOW: u64 = 1_000_000_000;

    fn contact(uri: &str, key: u64, expires: Option<u32>) -> ContactSpec {
        ContactSpec {
            uri: uri.to_string(),
            params: String::new(),
            expires,
            key,
        }
    }

    fn update(contacts: ContactSet, call_id: &str, cseq: u32) -> RegisterUpdate {
        RegisterUpdate {
            aor: "alice@example.test".into(),
            contacts,
            expires_header: None,
            call_id: call_id.into(),
            cseq,
            source: Source {
                transport: TransportKind::Udp,
                addr: "127.0.0.1:5070".parse().unwrap(),
                conn: None,
            },
            path: Vec::new(),
            user_agent: Some("test".into()),
            now_ms: NOW,
        }
    }

    fn changed(r: Result<Applied, RegisterError>) -> Vec<Binding> {
        match r {
            Ok(Applied::Changed(b)) => b,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn list(cs: Vec<ContactSpec>) -> ContactSet {
        ContactSet::List(cs)
    }

    #[test]
    fn add_refresh_remove() {
        let p = Policy::default();
        let b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, None)]), "c1", 1),
            &p,
        ));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].remaining_s(NOW), 3600);
        // Refresh with the Expires header.
        let mut u = update(list(vec![contact("sip:a@h", 1, None)]), "c1", 2);
        u.expires_header = Some(120);
        let b = changed(apply(&b, &u, &p));
        assert_eq!(b[0].remaining_s(NOW), 120);
        // The contact parameter beats the header; 0 removes.
        let mut u = update(list(vec![contact("sip:a@h", 1, Some(0))]), "c1", 3);
        u.expires_header = Some(120);
        assert!(changed(apply(&b, &u, &p)).is_empty());
    }

    #[test]
    fn bounds() {
        let p = Policy::default();
        let r = apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, Some(30))]), "c", 1),
            &p,
        );
        assert_eq!(r, Err(RegisterError::IntervalTooBrief { min: 60 }));
        let b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, Some(99_999))]), "c", 1),
            &p,
        ));
        assert_eq!(b[0].remaining_s(NOW), 7200);
    }

    #[test]
    fn cseq_rules() {
        let p = Policy::default();
        let b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, None)]), "c", 5),
            &p,
        ));
        // Equal: a retransmission, not applied.
        assert_eq!(
            apply(
                &b,
                &update(list(vec![contact("sip:a@h", 1, Some(0))]), "c", 5),
                &p
            ),
            Ok(Applied::Unchanged)
        );
        // Lower: out of order.
        assert_eq!(
            apply(
                &b,
                &update(list(vec![contact("sip:a@h", 1, Some(0))]), "c", 4),
                &p
            ),
            Err(RegisterError::OutOfOrder)
        );
        // Another Call-ID with a lower CSeq is fine (a rebooted phone).
        assert!(changed(apply(
            &b,
            &update(list(vec![contact("sip:a@h", 1, Some(0))]), "other", 1),
            &p
        ))
        .is_empty());
        // Wildcard: same rules.
        assert_eq!(
            apply(&b, &update(ContactSet::Wildcard, "c", 4), &p),
            Err(RegisterError::OutOfOrder)
        );
        assert!(changed(apply(&b, &update(ContactSet::Wildcard, "c", 6), &p)).is_empty());
    }

    #[test]
    fn query_and_expiry() {
        let p = Policy::default();
        let b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, Some(60))]), "c", 1),
            &p,
        ));
        assert_eq!(
            apply(&b, &update(ContactSet::Query, "q", 1), &p),
            Ok(Applied::Unchanged)
        );
        assert_eq!(next_expiry(&b), Some(NOW + 60_000));
        assert_eq!(expire(&b, NOW + 59_999), None);
        assert_eq!(expire(&b, NOW + 60_000), Some(Vec::new()));
        // A query after expiry commits the drop.
        let mut q = update(ContactSet::Query, "q", 1);
        q.now_ms = NOW + 60_000;
        assert_eq!(apply(&b, &q, &p), Ok(Applied::Changed(Vec::new())));
    }

    #[test]
    fn several_contacts_and_the_limit() {
        let p = Policy {
            max_contacts: 2,
            ..Policy::default()
        };
        let b = changed(apply(
            &[],
            &update(
                list(vec![
                    contact("sip:a@h", 1, Some(100)),
                    contact("sip:b@h", 2, Some(200)),
                ]),
                "c",
                1,
            ),
            &p,
        ));
        assert_eq!(b.len(), 2);
        // A third contact evicts the soonest-expiring untouched one.
        let b = changed(apply(
            &b,
            &update(list(vec![contact("sip:c@h", 3, Some(300))]), "d", 1),
            &p,
        ));
        let keys: Vec<u64> = b.iter().map(|b| b.key).collect();
        assert_eq!(keys, vec![2, 3]);
        // Three in one request is refused.
        let r = apply(
            &[],
            &update(
                list(vec![
                    contact("sip:a@h", 1, None),
                    contact("sip:b@h", 2, None),
                    contact("sip:c@h", 3, None),
                ]),
                "c",
                1,
            ),
            &p,
        );
        assert_eq!(r, Err(RegisterError::TooManyContacts { max: 2 }));
    }

    #[test]
    fn same_key_replaces_the_uri() {
        // The root crate keys contacts with +sip.instance by the instance, so a new
        // URI from the same device replaces its binding.
        let p = Policy::default();
        let b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h:5000", 7, None)]), "c", 1),
            &p,
        ));
        let b = changed(apply(
            &b,
            &update(list(vec![contact("sip:a@h:6000", 7, None)]), "d", 1),
            &p,
        ));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].uri, "sip:a@h:6000");
    }

    #[test]
    fn q_parameter() {
        let mut b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, None)]), "c", 1),
            &Policy::default(),
        ))
        .remove(0);
        assert_eq!(b.q_millis(), 1000);
        b.params = ";q=0.5;+sip.instance=\"<urn:x>\"".into();
        assert_eq!(b.q_millis(), 500);
        b.params = ";q=7".into();
        assert_eq!(b.q_millis(), 1000);
    }

    #[test]
    fn serde_round_trip() {
        let b = changed(apply(
            &[],
            &update(list(vec![contact("sip:a@h", 1, None)]), "c", 1),
            &Policy::default(),
        ));
        let s = serde_json::to_vec(&b).unwrap();
        let back: Vec<Binding> = serde_json::from_slice(&s).unwrap();
        assert_eq!(back, b);
    }
}
