//! Header names: compact forms expanded and well-known names in canonical case
//! (RFC 3261 §7.3.3, §20; RFC 3515, RFC 4028, RFC 3841, RFC 4474, RFC 6665).
//!
//! rsip 0.4 matches long names only (`v:`, `f:`, `t:`, `i:`, `m:`, `l:` fall through as
//! unknown headers); here every compact letter the IANA registry lists maps to its long
//! name, and header names compare case-insensitively, so `MaX-fOrWaRdS` is Max-Forwards.

use std::borrow::Cow;
use std::sync::OnceLock;

/// Compact letters (RFC 3261 §7.3.3 and the IANA SIP header registry).
const COMPACT: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Long names in canonical spelling.
const KNOWN: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Content-Disposition",
    "Content-Language",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Allow",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Expires",
    "Min-Expires",
    "User-Agent",
    "Server",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Authentication-Info",
    "Date",
    "Subject",
    "Event",
    "Allow-Events",
    "Refer-To",
    "Referred-By",
    "Session-Expires",
    "Min-SE",
    "RSeq",
    "RAck",
    "Path",
    "Timestamp",
    "Reason",
    "Warning",
    "Retry-After",
    "Organization",
    "Priority",
    "Call-Info",
    "Alert-Info",
    "Error-Info",
    "In-Reply-To",
    "MIME-Version",
    "Reply-To",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Privacy",
    "Diversion",
    "Replaces",
    "History-Info",
    "Identity",
    "Identity-Info",
    "Accept-Contact",
    "Reject-Contact",
    "Request-Disposition",
];

/// The canonical name of a header: compact letters expanded, known names in canonical
/// case, anything else kept as written.
pub fn canonical_name(name: &str) -> Cow<'static, str> {
    if name.len() == 1 {
        let c = name.as_bytes()[0].to_ascii_lowercase();
        if let Some((_, long)) = COMPACT.iter().find(|(l, _)| *l == c) {
            return Cow::Borrowed(long);
        }
    }
    let bucket = by_length()
        .get(name.len())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    match bucket.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_string()),
    }
}

/// The known names grouped by length, so a lookup compares a handful at most.
fn by_length() -> &'static [Vec<&'static str>] {
    static INDEX: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let longest = KNOWN.iter().map(|k| k.len()).max().unwrap_or(0);
        let mut index = vec![Vec::new(); longest + 1];
        for k in KNOWN {
            index[k.len()].push(*k);
        }
        index
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_letters_expand() {
        for (short, long) in [
            ("v", "Via"),
            ("f", "From"),
            ("t", "To"),
            ("i", "Call-ID"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("c", "Content-Type"),
            ("k", "Supported"),
            ("s", "Subject"),
            ("e", "Content-Encoding"),
            ("o", "Event"),
            ("u", "Allow-Events"),
            ("r", "Refer-To"),
            ("x", "Session-Expires"),
            ("y", "Identity"),
            ("b", "Referred-By"),
            ("M", "Contact"),
            ("L", "Content-Length"),
        ] {
            assert_eq!(canonical_name(short), long, "{short}");
        }
    }

    #[test]
    fn long_names_case_insensitive() {
        assert_eq!(canonical_name("MaX-fOrWaRdS"), "Max-Forwards");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("call-id"), "Call-ID");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        assert_eq!(canonical_name("q"), "q");
    }
}
