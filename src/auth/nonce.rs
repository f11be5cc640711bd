//! Stateless, self-authenticating nonces and the opaque value (RFC 7616 §3.3 `nonce`
//! and `opaque`, §5.4 and §5.5 on nonce freshness; RFC 3261 §22.4).
//!
//! A nonce is 32 bytes as 64 lower-case hex digits:
//! `issue time (u64 big-endian unix seconds) ‖ 8 random bytes ‖ MAC`, where MAC is
//! HMAC-SHA256(secret, "softswitch-nonce\0" ‖ time ‖ random ‖ realm) truncated to 16
//! bytes. The server keeps no state per challenge: any nonce whose MAC checks was issued
//! by a holder of the secret for that realm, and its age comes from the embedded time.
//! Hex keeps the nonce inside the characters a quoted-string allows, without `"` or `\`.
//!
//! The opaque value is a per-secret constant: the hex of the first 8 bytes of
//! HMAC-SHA256(secret, "softswitch-opaque").

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::digest::{from_hex, to_hex};

type HmacSha256 = Hmac<Sha256>;

/// Length of the MAC kept in a nonce, in bytes.
const MAC_LEN: usize = 16;
/// Length of a nonce in bytes (before hex).
const NONCE_LEN: usize = 8 + 8 + MAC_LEN;

/// Issues and checks nonces under one secret. `Debug` never shows the secret.
#[derive(Clone)]
pub(crate) struct NonceKey {
    secret: [u8; 32],
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl NonceKey {
    pub(crate) fn new(secret: [u8; 32]) -> NonceKey {
        NonceKey { secret }
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length, so new_from_slice cannot fail for 32 bytes;
        // the fallback keeps this total without a panic path.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return [0u8; 32],
        };
        mac.update(label);
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    fn nonce_mac(&self, time: &[u8; 8], random: &[u8; 8], realm: &str) -> [u8; 32] {
        self.mac(b"softswitch-nonce\0", &[time, random, realm.as_bytes()])
    }

    /// A nonce for `realm` issued at `now` (unix seconds) with the caller's random bytes.
    pub(crate) fn issue(&self, realm: &str, now: u64, random: [u8; 8]) -> String {
        let time = now.to_be_bytes();
        let mac = self.nonce_mac(&time, &random, realm);
        let mut raw = [0u8; NONCE_LEN];
        for (dst, src) in raw.iter_mut().zip(
            time.iter()
                .chain(random.iter())
                .chain(mac.iter().take(MAC_LEN)),
        ) {
            *dst = *src;
        }
        to_hex(&raw)
    }

    /// The issue time of `nonce` if it is one of ours for `realm` (MAC compared in
    /// constant time); `None` for anything else.
    pub(crate) fn check(&self, realm: &str, nonce: &str) -> Option<u64> {
        let raw: [u8; NONCE_LEN] = from_hex(nonce)?;
        let (time, rest) = raw.split_first_chunk::<8>()?;
        let (random, mac) = rest.split_first_chunk::<8>()?;
        let want = self.nonce_mac(time, random, realm);
        let want = want.get(..MAC_LEN)?;
        if bool::from(want.ct_eq(mac)) {
            Some(u64::from_be_bytes(*time))
        } else {
            None
        }
    }

    /// The opaque value sent in every challenge.
    pub(crate) fn opaque(&self) -> String {
        let mac = self.mac(b"softswitch-opaque", &[]);
        to_hex(mac.get(..8).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NonceKey {
        NonceKey::new([7u8; 32])
    }

    #[test]
    fn round_trip() {
        let k = key();
        let n = k.issue("example.test", 1_700_000_000, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(n.len(), 64);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(k.check("example.test", &n), Some(1_700_000_000));
        // hex case does not matter to the check
        assert_eq!(
            k.check("example.test", &n.to_uppercase()),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn refuses_foreign_and_tampered() {
        let k = key();
        let n = k.issue("example.test", 1_700_000_000, [9; 8]);
        assert_eq!(k.check("other.test", &n), None, "bound to the realm");
        assert_eq!(NonceKey::new([8u8; 32]).check("example.test", &n), None);
        for i in 0..n.len() {
            let mut b = n.clone().into_bytes();
            if let Some(c) = b.get_mut(i) {
                *c = if *c == b'0' { b'1' } else { b'0' };
            }
            let t = String::from_utf8(b).unwrap_or_default();
            assert_eq!(k.check("example.test", &t), None, "flip at {i}");
        }
        assert_eq!(k.check("example.test", ""), None);
        assert_eq!(k.check("example.test", &n[..63]), None);
        assert_eq!(k.check("example.test", &format!("{n}0")), None);
        assert_eq!(k.check("example.test", &"é".repeat(32)), None);
    }

    #[test]
    fn random_part_changes_nonce() {
        let k = key();
        assert_ne!(
            k.issue("r", 1, [0; 8]),
            k.issue("r", 1, [1, 0, 0, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn opaque_is_per_secret_constant() {
        assert_eq!(key().opaque(), key().opaque());
        assert_eq!(key().opaque().len(), 16);
        assert_ne!(key().opaque(), NonceKey::new([8u8; 32]).opaque());
        assert!(!format!("{:?}", key()).contains('7'));
    }
}
