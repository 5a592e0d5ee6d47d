//! Access control: static bearer tokens from a followed file, and JWTs checked with a
//! key file. Off unless `--auth-tokens-file` or `--jwt-key-file` is given.
//!
//! Token values never reach a log line or a metric label: errors name the file, never
//! its content, and a refused request is counted by reason only. Static tokens are
//! compared as SHA-256 digests in constant time, against every configured token.

use crate::metrics as m;
use clap::{Args, ValueEnum};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Requests refused by the access check, by reason (`missing`, `invalid`).
pub const AUTH_REFUSED: &str = "loco_discovery_auth_refused_total";

/// How much clock skew `exp` and `nbf` tolerate.
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);

/// The JWT signature algorithms accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

/// The access-control and CORS flags of `serve` and `demo`.
#[derive(Clone, Debug, Default, Args)]
pub struct AccessArgs {
    /// Bearer tokens, one per line (blank lines and `#` comments ignored), followed for
    /// changes. Turns authentication on for the instance routes.
    #[arg(long, env = "AUTH_TOKENS_FILE", value_name = "PATH")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Key that JWTs are verified with: an HS256 secret (at least 32 bytes) or a PEM
    /// public key (RS256/ES256). Turns authentication on for the instance routes.
    #[arg(long, env = "JWT_KEY_FILE", value_name = "PATH")]
    pub jwt_key_file: Option<PathBuf>,
    /// The JWT algorithm; inferred from the key file when unset (PEM public key: RS256
    /// or ES256 by its type, anything else: an HS256 secret).
    #[arg(long, env = "JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// The `aud` a JWT must carry; not checked when unset.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Origins allowed to call the API from a browser (exact `scheme://host[:port]`,
    /// comma-separated; `*` only without authentication). Off: same-origin only.
    #[arg(
        long = "cors-allow-origin",
        env = "CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,
}

/// Validated access settings.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    pub tokens_file: Option<PathBuf>,
    pub jwt: Option<JwtConfig>,
    /// Allowed CORS origins; empty: no CORS headers at all.
    pub cors_allow_origins: Vec<String>,
}

/// A JWT verification key, its algorithm and the expected audience.
#[derive(Clone)]
pub struct JwtConfig {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
    pub audience: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl AccessArgs {
    /// The settings these flags describe (the JWT key file is read now), or why not.
    pub fn checked(&self) -> Result<AccessConfig, String> {
        let jwt = match &self.jwt_key_file {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read the JWT key file {}: {e}", path.display()))?;
                let (key, algorithm) = jwt_key(&bytes, self.jwt_algorithm)
                    .map_err(|e| format!("JWT key file {}: {e}", path.display()))?;
                Some(JwtConfig {
                    key,
                    algorithm,
                    audience: self.jwt_audience.clone(),
                })
            }
        };
        let config = AccessConfig {
            tokens_file: self.auth_tokens_file.clone(),
            jwt,
            cors_allow_origins: check_origins(&self.cors_allow_origins)?,
        };
        if config.auth_enabled() && config.cors_allow_origins.iter().any(|o| o == "*") {
            return Err(
                "--cors-allow-origin '*' is refused with authentication on: \
                        list the allowed origins"
                    .into(),
            );
        }
        Ok(config)
    }
}

impl AccessConfig {
    /// Whether the instance routes need a token.
    pub fn auth_enabled(&self) -> bool {
        self.tokens_file.is_some() || self.jwt.is_some()
    }
}

/// Exact origins (`scheme://host[:port]`, no path) or `*`.
fn check_origins(origins: &[String]) -> Result<Vec<String>, String> {
    let mut checked = Vec::new();
    for origin in origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
    {
        let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
        let rest = origin.split_once("://").map(|(_, r)| r).unwrap_or("");
        let ok = origin == "*"
            || (scheme_ok
                && !rest.is_empty()
                && !rest.contains('/')
                && origin.parse::<warp::http::HeaderValue>().is_ok());
        if !ok {
            return Err(format!(
                "--cors-allow-origin {origin:?}: expected scheme://host[:port] without a path, or *"
            ));
        }
        checked.push(origin.to_owned());
    }
    Ok(checked)
}

/// The decoding key and algorithm of a key file's content.
fn jwt_key(
    bytes: &[u8],
    algorithm: Option<JwtAlgorithm>,
) -> Result<(DecodingKey, Algorithm), String> {
    let is_pem = bytes.windows(10).any(|w| w == b"-----BEGIN");
    let algorithm = match algorithm {
        Some(a) => a,
        None if !is_pem => JwtAlgorithm::Hs256,
        None if DecodingKey::from_rsa_pem(bytes).is_ok() => JwtAlgorithm::Rs256,
        None if DecodingKey::from_ec_pem(bytes).is_ok() => JwtAlgorithm::Es256,
        None => return Err("a PEM file that is neither an RSA nor an EC public key".into()),
    };
    let pem_error = |e: jsonwebtoken::errors::Error| format!("not a usable public key: {e}");
    match algorithm {
        JwtAlgorithm::Hs256 => {
            let secret = trim_ascii_end(bytes);
            if is_pem {
                return Err("HS256 needs a secret, not a PEM key".into());
            }
            if secret.len() < 32 {
                return Err("an HS256 secret must be at least 32 bytes".into());
            }
            Ok((DecodingKey::from_secret(secret), Algorithm::HS256))
        }
        JwtAlgorithm::Rs256 => Ok((
            DecodingKey::from_rsa_pem(bytes).map_err(pem_error)?,
            Algorithm::RS256,
        )),
        JwtAlgorithm::Es256 => Ok((
            DecodingKey::from_ec_pem(bytes).map_err(pem_error)?,
            Algorithm::ES256,
        )),
    }
}

fn trim_ascii_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// The static tokens of a tokens file: one per line, blank lines and `#` comments
/// ignored. A token must be visible ASCII without spaces; the error names the line
/// number only.
pub fn parse_tokens(text: &str) -> Result<TokenSet, String> {
    let mut digests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "line {}: a token must be visible ASCII without spaces",
                n + 1
            ));
        }
        digests.push(digest(line));
    }
    Ok(TokenSet(digests))
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Digests of the accepted static tokens.
#[derive(Clone, Debug, Default)]
pub struct TokenSet(Vec<[u8; 32]>);

impl TokenSet {
    /// Whether `token` is one of the set: every entry is compared, in constant time.
    fn contains(&self, token: &str) -> bool {
        let presented = digest(token);
        let mut found = subtle::Choice::from(0);
        for known in &self.0 {
            found |= known.ct_eq(&presented);
        }
        found.into()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a request was refused: the message of the 401 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "authentication required: send Authorization: Bearer <token> or ?access_token="
            }
            Refusal::Invalid => "invalid or expired token",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
        }
    }
}

/// The access check shared by the protected routes.
#[derive(Clone, Default)]
pub struct Authenticator {
    enabled: bool,
    tokens: Arc<RwLock<TokenSet>>,
    jwt: Option<Arc<(DecodingKey, Validation)>>,
}

impl Authenticator {
    /// The check `config` describes; static tokens start empty (see [`Self::set_tokens`]).
    pub fn new(config: &AccessConfig) -> Self {
        let jwt = config.jwt.as_ref().map(|jwt| {
            let mut validation = Validation::new(jwt.algorithm);
            validation.leeway = JWT_LEEWAY.as_secs();
            validation.validate_nbf = true;
            validation.validate_exp = true;
            match &jwt.audience {
                Some(aud) => {
                    validation.set_audience(&[aud]);
                    // Without this a token with no `aud` at all would pass.
                    validation.set_required_spec_claims(&["exp", "aud"]);
                }
                None => validation.validate_aud = false,
            }
            Arc::new((jwt.key.clone(), validation))
        });
        Self {
            enabled: config.auth_enabled(),
            tokens: Arc::default(),
            jwt,
        }
    }

    /// Whether requests need a token.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Replaces the static tokens (the tokens file changed).
    pub fn set_tokens(&self, tokens: TokenSet) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
    }

    /// Checks a request's `Authorization` header or its `access_token` parameter (the
    /// header wins); counts refusals by reason.
    pub fn check(
        &self,
        authorization: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<(), Refusal> {
        if !self.enabled {
            return Ok(());
        }
        let result = match bearer(authorization).or(query_token.filter(|t| !t.is_empty())) {
            None => Err(Refusal::Missing),
            Some(token) if self.accepts(token) => Ok(()),
            Some(_) => Err(Refusal::Invalid),
        };
        if let Err(refusal) = result {
            metrics::counter!(AUTH_REFUSED, "reason" => refusal.reason()).increment(1);
        }
        result
    }

    fn accepts(&self, token: &str) -> bool {
        let by_list = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(token);
        by_list
            || self.jwt.as_ref().is_some_and(|jwt| {
                jsonwebtoken::decode::<serde_json::Value>(token, &jwt.0, &jwt.1).is_ok()
            })
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Follows the tokens file into `auth` until `shutdown`: a bad or missing file keeps the
/// last good tokens (logged without their values, counted in the file errors metric).
pub fn follow_tokens(
    path: PathBuf,
    every: Duration,
    auth: Authenticator,
    shutdown: tokio_util::sync::CancellationToken,
) {
    // Loaded now, so the first requests do not race the first poll.
    match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| parse_tokens(&t))
    {
        Ok(tokens) => auth.set_tokens(tokens),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "tokens file not loaded; no static token is accepted until it is");
            metrics::counter!(m::FILE_ERRORS, "file" => "auth-tokens").increment(1);
        }
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<TokenSet>(4);
    tokio::spawn(crate::files::follow_file(
        path,
        "auth-tokens",
        every,
        shutdown,
        sender,
        parse_tokens,
    ));
    tokio::spawn(async move {
        while let Some(tokens) = receiver.recv().await {
            auth.set_tokens(tokens);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tokens(text: &str) -> Authenticator {
        let auth = Authenticator::new(&AccessConfig {
            tokens_file: Some("t".into()),
            ..AccessConfig::default()
        });
        auth.set_tokens(parse_tokens(text).unwrap());
        auth
    }

    #[test]
    fn tokens_file_lines_comments_and_blanks() {
        let tokens = parse_tokens("# a comment\n\n  alpha  \nbeta\n").unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.contains("alpha") && tokens.contains("beta"));
        assert!(!tokens.contains("# a comment") && !tokens.contains(""));
        let error = parse_tokens("good\nhas space-secret\n").unwrap_err();
        assert_eq!(
            error,
            "line 2: a token must be visible ASCII without spaces"
        );
    }

    #[test]
    fn header_or_query_token_is_checked() {
        let auth = with_tokens("s3cret\n");
        assert_eq!(auth.check(None, None), Err(Refusal::Missing));
        assert_eq!(auth.check(Some("Bearer s3cret"), None), Ok(()));
        assert_eq!(auth.check(Some("bearer  s3cret "), None), Ok(()));
        assert_eq!(auth.check(None, Some("s3cret")), Ok(()));
        assert_eq!(auth.check(Some("Bearer nope"), None), Err(Refusal::Invalid));
        assert_eq!(
            auth.check(Some("Basic s3cret"), None),
            Err(Refusal::Missing)
        );
        assert_eq!(
            auth.check(Some("Bearer nope"), Some("s3cret")),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn off_by_default() {
        let auth = Authenticator::new(&AccessConfig::default());
        assert!(!auth.enabled());
        assert_eq!(auth.check(None, None), Ok(()));
    }

    #[test]
    fn key_inference_and_refusals() {
        let secret = b"0123456789abcdef0123456789abcdef\n";
        assert_eq!(jwt_key(secret, None).unwrap().1, Algorithm::HS256);
        assert!(jwt_key(b"short", None).is_err_and(|e| e.contains("32 bytes")));
        assert!(jwt_key(
            b"-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n",
            None
        )
        .is_err());
    }

    #[test]
    fn origins_are_exact_and_star_needs_no_auth() {
        let args = AccessArgs {
            cors_allow_origins: vec!["https://a.example".into(), " http://b:8080/ ".into()],
            ..AccessArgs::default()
        };
        assert_eq!(
            args.checked().unwrap().cors_allow_origins,
            vec!["https://a.example", "http://b:8080"]
        );
        for bad in ["a.example", "https://a.example/path", "ftp://x"] {
            let args = AccessArgs {
                cors_allow_origins: vec![bad.into()],
                ..AccessArgs::default()
            };
            assert!(args.checked().is_err(), "{bad}");
        }
        let args = AccessArgs {
            cors_allow_origins: vec!["*".into()],
            auth_tokens_file: Some("t".into()),
            ..AccessArgs::default()
        };
        assert!(args.checked().unwrap_err().contains("'*'"));
    }
}
