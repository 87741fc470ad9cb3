//! A small credential scanner: text that holds something shaped like a token or key.

struct Pattern {
    kind: &'static str,
    prefix: &'static str,
    /// Characters that must follow the prefix, and how many at least.
    body: fn(u8) -> bool,
    min: usize,
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}
fn upper_alnum(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

static PATTERNS: &[Pattern] = &[
    Pattern { kind: "GitHub personal access token", prefix: "ghp_", body: alnum, min: 36 },
    Pattern { kind: "GitHub OAuth token", prefix: "gho_", body: alnum, min: 36 },
    Pattern { kind: "GitHub app token", prefix: "ghs_", body: alnum, min: 36 },
    Pattern { kind: "GitHub refresh token", prefix: "ghr_", body: alnum, min: 36 },
    Pattern { kind: "GitHub fine-grained token", prefix: "github_pat_", body: token, min: 60 },
    Pattern { kind: "AWS access key", prefix: "AKIA", body: upper_alnum, min: 16 },
    Pattern { kind: "AWS temporary key", prefix: "ASIA", body: upper_alnum, min: 16 },
    Pattern { kind: "Slack token", prefix: "xoxb-", body: token, min: 20 },
    Pattern { kind: "Slack user token", prefix: "xoxp-", body: token, min: 20 },
    Pattern { kind: "Stripe secret key", prefix: "sk_live_", body: alnum, min: 24 },
    Pattern { kind: "Google API key", prefix: "AIza", body: token, min: 35 },
    Pattern { kind: "npm token", prefix: "npm_", body: alnum, min: 36 },
    Pattern { kind: "private key", prefix: "-----BEGIN ", body: |c| c.is_ascii_uppercase() || c == b' ', min: 10 },
];

/// The kind of the first credential-shaped string in `text`, if any.
pub fn find(text: &str) -> Option<&'static str> {
    let b = text.as_bytes();
    for p in PATTERNS {
        let mut from = 0;
        while let Some(at) = text[from..].find(p.prefix) {
            let start = from + at + p.prefix.len();
            let n = b[start..].iter().take_while(|c| (p.body)(**c)).count();
            if n >= p.min {
                return Some(p.kind);
            }
            from = start;
        }
    }
    None
}
