//! The subscriber directory: the configured users (`[[users]]`, or the demo directory)
//! with their digest credentials, keyed by user name.
//!
//! Credentials are derived once at start-up: from a clear `password` every HA1 the
//! switch can challenge with (MD5, SHA-256, SHA-512-256); from `ha1` (and `ha1_sha256`)
//! only those; with them the user's own challenge list (`algorithms`), if any. Which
//! HA1s a user has never shapes a challenge (`crate::auth`). The clear password is not
//! kept. Nothing here is ever logged or served.

use crate::auth::{Algorithm, Algorithms, Credentials};
use crate::config::UserConfig;
use std::collections::HashMap;

/// One subscriber.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The user part of the AOR.
    pub user: String,
    /// Digest credentials (redacted in Debug).
    pub credentials: Credentials,
    /// The user's profile (call waiting, forwarding); its secrets are cleared.
    pub profile: UserConfig,
}

/// Every subscriber of the served domain.
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<String, Subscriber>,
}

impl Directory {
    /// The directory of `users` in `realm` (the served domain). Errors name the user whose
    /// HA1 is malformed (validation normally catches that first).
    pub fn new(users: &[UserConfig], realm: &str) -> Result<Directory, String> {
        let mut map = HashMap::with_capacity(users.len());
        for u in users {
            let credentials = match (&u.password, &u.ha1) {
                (Some(pw), _) => Credentials::from_password(&u.user, realm, pw),
                (None, Some(h)) => {
                    let c = Credentials::from_ha1_md5(h)
                        .map_err(|e| format!("users.{}: ha1: {e}", u.user))?;
                    match &u.ha1_sha256 {
                        Some(h2) => c
                            .with_ha1_sha256(h2)
                            .map_err(|e| format!("users.{}: ha1_sha256: {e}", u.user))?,
                        None => c,
                    }
                }
                (None, None) => return Err(format!("users.{}: no password or ha1", u.user)),
            };
            let credentials = match &u.algorithms {
                None => credentials,
                Some(names) => {
                    let mut algs = Vec::with_capacity(names.len());
                    for n in names {
                        algs.push(
                            n.parse::<Algorithm>()
                                .map_err(|e| format!("users.{}: algorithms: {n:?}: {e}", u.user))?,
                        );
                    }
                    credentials
                        .with_algorithms(Algorithms::new(algs))
                        .map_err(|e| format!("users.{}: algorithms: {e}", u.user))?
                }
            };
            let mut profile = u.clone();
            profile.password = None;
            profile.ha1 = None;
            profile.ha1_sha256 = None;
            map.insert(
                u.user.clone(),
                Subscriber {
                    user: u.user.clone(),
                    credentials,
                    profile,
                },
            );
        }
        Ok(Directory { users: map })
    }

    /// The subscriber named `user`.
    pub fn get(&self, user: &str) -> Option<&Subscriber> {
        self.users.get(user)
    }

    /// True when `user` is a subscriber.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// How many subscribers there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}
