//! Access control: bearer tokens from a followed file, JWTs, CORS and the dashboard's
//! security headers, against a static-mode gateway on loopback.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use loco_discovery::auth_tokens::{AccessArgs, JwtAlgorithm};
use loco_discovery::config::DiscoveryMode;
use loco_discovery::GatewayConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::eventually;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LIMIT: Duration = Duration::from_secs(10);
const PROTECTED: &[&str] = &[
    "/api/instances/live",
    "/instances/live",
    "/api/instances/stream",
    "/api/instances/discovery-info",
];
const OPEN: &[&str] = &[
    "/healthz",
    "/readyz",
    "/",
    "/discovery-client.js",
    "/dashboard.js",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// A static-mode gateway with `access` and its instances file in `dir`.
async fn gateway(dir: &Path, access: AccessArgs) -> (String, tokio_util::sync::CancellationToken) {
    std::fs::write(
        dir.join("instances.json"),
        r#"[{"id": "instance-0", "address": "10.1.0.1"}]"#,
    )
    .unwrap();
    let mut config = GatewayConfig::new("loco", vec!["loco-loco-emulator".into()]);
    config.mode = DiscoveryMode::Static;
    config.static_file = Some(dir.join("instances.json"));
    config.file_poll = Duration::from_millis(50);
    config.access = access.checked().unwrap();
    let (url, stop) = support::start_without_cluster(config).await;
    support::ready_at(&url, LIMIT).await;
    (url, stop)
}

fn tokens_args(file: &Path) -> AccessArgs {
    AccessArgs {
        auth_tokens_file: Some(file.to_owned()),
        ..AccessArgs::default()
    }
}

async fn get(url: &str, bearer: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn status(url: &str, bearer: Option<&str>) -> u16 {
    get(url, bearer).await.status().as_u16()
}

async fn assert_401(url: &str, bearer: Option<&str>) {
    let response = get(url, bearer).await;
    assert_eq!(response.status(), 401, "{url}");
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 401, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
}

/// The WebSocket handshake's status: 101 when upgraded.
async fn ws_status(url: &str, bearer: Option<&str>) -> u16 {
    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn tokens_guard_the_instance_routes_and_leave_probes_and_dashboard_open() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# team tokens\n\nalpha-token\n  beta-token  \n").unwrap();
    let (url, stop) = gateway(dir.path(), tokens_args(&tokens)).await;

    for path in PROTECTED {
        assert_401(&format!("{url}{path}"), None).await;
        assert_401(&format!("{url}{path}"), Some("wrong")).await;
        assert_401(&format!("{url}{path}?access_token=wrong"), None).await;
    }
    for token in ["alpha-token", "beta-token"] {
        assert_eq!(
            status(&format!("{url}/api/instances/live"), Some(token)).await,
            200
        );
    }
    // The query parameter, for EventSource and browsers' WebSocket.
    assert_eq!(
        status(
            &format!("{url}/api/instances/live?access_token=alpha-token"),
            None
        )
        .await,
        200
    );
    let mut sse = support::SseClient::connect(
        &format!("{url}/api/instances/stream?access_token=beta-token"),
        None,
    )
    .await;
    assert_eq!(sse.next().await.event, "snapshot");
    // POST refresh.
    let refresh = |bearer: Option<&'static str>| {
        let mut request = reqwest::Client::new().post(format!("{url}/api/instances/refresh"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(refresh(None).await, 401);
    assert_ne!(refresh(Some("alpha-token")).await, 401);
    // WebSocket: the handshake is refused before the upgrade.
    let ws = format!("{url}/api/instances/ws");
    assert_eq!(ws_status(&ws, None).await, 401);
    assert_eq!(ws_status(&ws, Some("alpha-token")).await, 101);
    assert_eq!(
        ws_status(&format!("{ws}?access_token=beta-token"), None).await,
        101
    );

    for path in OPEN {
        assert_eq!(status(&format!("{url}{path}"), None).await, 200, "{path}");
    }
    // Unknown routes stay 404, not 401.
    assert_eq!(status(&format!("{url}/api/nope"), None).await, 404);
    stop.cancel();
}

#[tokio::test]
async fn tokens_file_is_followed_and_a_bad_or_missing_file_keeps_the_last_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "first-token\n").unwrap();
    let (url, stop) = gateway(dir.path(), tokens_args(&tokens)).await;
    let live = format!("{url}/api/instances/live");
    assert_eq!(status(&live, Some("first-token")).await, 200);

    std::fs::write(&tokens, "second-token\n").unwrap();
    eventually(LIMIT, || async {
        status(&live, Some("second-token")).await == 200
    })
    .await
    .unwrap();
    assert_eq!(status(&live, Some("first-token")).await, 401);

    let errors_before = file_errors(&url).await;
    // A token with a space is refused: the whole file is, and the last tokens stay.
    std::fs::write(&tokens, "third token\n").unwrap();
    eventually(LIMIT, || async { file_errors(&url).await > errors_before })
        .await
        .unwrap();
    assert_eq!(status(&live, Some("second-token")).await, 200);
    std::fs::remove_file(&tokens).unwrap();
    eventually(LIMIT, || async {
        file_errors(&url).await > errors_before + 1
    })
    .await
    .unwrap();
    assert_eq!(status(&live, Some("second-token")).await, 200);
    let metrics = get(&format!("{url}/metrics"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("second-token") && !metrics.contains("third"));
    stop.cancel();
}

/// `loco_discovery_file_errors_total{file="auth-tokens"}`.
async fn file_errors(url: &str) -> u64 {
    let text = get(&format!("{url}/metrics"), None)
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("loco_discovery_file_errors_total") && l.contains("auth-tokens"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn jwt_args(key: &Path, algorithm: Option<JwtAlgorithm>, audience: Option<&str>) -> AccessArgs {
    AccessArgs {
        jwt_key_file: Some(key.to_owned()),
        jwt_algorithm: algorithm,
        jwt_audience: audience.map(str::to_owned),
        ..AccessArgs::default()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const SECRET: &[u8] = b"an HS256 secret of at least 32 bytes, for tests";

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn jwts_are_checked_for_signature_exp_nbf_and_audience() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret");
    std::fs::write(&key, [SECRET, b"\n"].concat()).unwrap();
    let (url, stop) = gateway(dir.path(), jwt_args(&key, None, Some("loco"))).await;
    let live = format!("{url}/api/instances/live");
    let good = hs256(json!({"sub": "a", "aud": "loco", "exp": now() + 300}));
    assert_eq!(status(&live, Some(&good)).await, 200);
    assert_eq!(
        status(&format!("{live}?access_token={good}"), None).await,
        200
    );
    let refused = [
        ("expired", hs256(json!({"aud": "loco", "exp": now() - 600}))),
        ("no exp", hs256(json!({"aud": "loco"}))),
        (
            "not yet valid",
            hs256(json!({"aud": "loco", "exp": now() + 900, "nbf": now() + 600})),
        ),
        (
            "other audience",
            hs256(json!({"aud": "other", "exp": now() + 300})),
        ),
        ("no audience", hs256(json!({"exp": now() + 300}))),
        (
            "other key",
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"aud": "loco", "exp": now() + 300}),
                &EncodingKey::from_secret(b"another secret of at least 32 bytes.."),
            )
            .unwrap(),
        ),
        ("alg none", {
            let head = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
            let body = good.split('.').nth(1).unwrap();
            format!("{head}.{body}.")
        }),
    ];
    for (what, token) in &refused {
        assert_eq!(status(&live, Some(token)).await, 401, "{what}");
    }
    // Within the leeway.
    let just_expired = hs256(json!({"aud": "loco", "exp": now() - 5}));
    assert_eq!(status(&live, Some(&just_expired)).await, 200);
    stop.cancel();
}

#[tokio::test]
async fn rs256_and_es256_public_keys_are_inferred_and_tokens_or_jwts_both_work() {
    for (public, private, algorithm) in [
        ("rs256-public.pem", "rs256-private.pem", Algorithm::RS256),
        ("es256-public.pem", "es256-private.pem", Algorithm::ES256),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "static-token\n").unwrap();
        let access = AccessArgs {
            auth_tokens_file: Some(tokens),
            ..jwt_args(&fixture(public), None, None)
        };
        let (url, stop) = gateway(dir.path(), access).await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let claims = json!({"sub": "a", "exp": now() + 300});
        let jwt = encode(&Header::new(algorithm), &claims, &key).unwrap();
        let live = format!("{url}/api/instances/live");
        assert_eq!(status(&live, Some(&jwt)).await, 200, "{algorithm:?}");
        assert_eq!(status(&live, Some("static-token")).await, 200);
        // An HS256 token signed with the public key as the secret (algorithm confusion).
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&std::fs::read(fixture(public)).unwrap()),
        )
        .unwrap();
        assert_eq!(status(&live, Some(&confused)).await, 401, "{algorithm:?}");
        stop.cancel();
    }
    // A key that does not fit the algorithm given is refused at start.
    let args = jwt_args(
        &fixture("es256-public.pem"),
        Some(JwtAlgorithm::Rs256),
        None,
    );
    assert!(args.checked().unwrap_err().contains("es256-public.pem"));
    let args = jwt_args(
        &fixture("rs256-public.pem"),
        Some(JwtAlgorithm::Hs256),
        None,
    );
    assert!(args.checked().is_err());
}

#[tokio::test]
async fn without_flags_everything_is_open_and_no_cors_headers_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = gateway(dir.path(), AccessArgs::default()).await;
    let response = reqwest::Client::new()
        .get(format!("{url}/api/instances/live"))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let preflight = preflight(&url, "https://elsewhere.example").await;
    assert_ne!(preflight.status(), 204);
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    stop.cancel();
}

async fn preflight(url: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{url}/api/instances/stream"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, last-event-id",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_echoes_allowed_origins_answers_preflights_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "cors-token\n").unwrap();
    let access = AccessArgs {
        cors_allow_origins: vec!["https://app.example".into(), "http://127.0.0.1:9".into()],
        ..tokens_args(&tokens)
    };
    let (url, stop) = gateway(dir.path(), access).await;

    let allowed = preflight(&url, "https://app.example").await;
    assert_eq!(allowed.status(), 204);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, OPTIONS");
    let allow_headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for needed in ["authorization", "last-event-id", "content-type"] {
        assert!(allow_headers.contains(needed), "{allow_headers}");
    }
    assert!(h["vary"].to_str().unwrap().contains("Origin"));

    let refused = preflight(&url, "https://evil.example").await;
    assert_eq!(refused.status(), 403);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let from = |origin: &'static str, bearer: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .get(format!("{url}/api/instances/live"))
            .header("origin", origin);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };
    let ok = from("https://app.example", Some("cors-token")).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(ok.headers()["vary"].to_str().unwrap().contains("Origin"));
    // A 401 carries the header too, so the page can read why.
    let denied = from("https://app.example", None).await;
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // Another origin: served (no browser reads it), but never allowed.
    let other = from("https://evil.example", Some("cors-token")).await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // `*` with authentication on is a configuration error.
    let star = AccessArgs {
        cors_allow_origins: vec!["*".into()],
        ..tokens_args(&tokens)
    };
    assert!(star.checked().is_err());
    stop.cancel();
}

#[tokio::test]
async fn the_dashboard_sends_csp_referrer_policy_and_nosniff() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = gateway(dir.path(), AccessArgs::default()).await;
    for path in ["/", "/dashboard.js", "/discovery-client.js"] {
        let response = get(&format!("{url}{path}"), None).await;
        let h = response.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "script-src 'self'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let page = get(&format!("{url}/"), None).await.text().await.unwrap();
    // No inline script: every <script> has a src.
    for script in page.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap();
        assert!(tag.contains("src="), "inline script: <script{tag}>");
    }
    assert!(!page.contains(" style=\""), "inline style attribute");
    stop.cancel();
}

#[test]
fn tokens_never_reach_the_logs_or_the_metrics() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let instances = dir.path().join("instances.json");
    std::fs::write(
        &instances,
        r#"[{"id": "instance-0", "address": "10.1.0.1"}]"#,
    )
    .unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "good-secret-one\n").unwrap();
    let log = dir.path().join("log");
    let child = Command::new(env!("CARGO_BIN_EXE_loco-discovery"))
        .args(["serve", "--mode", "static", "--listen", "127.0.0.1:0"])
        .arg("--static-file")
        .arg(&instances)
        .arg("--auth-tokens-file")
        .arg(&tokens)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut running = support::process::Running(child);
    let mut lines = BufReader::new(running.0.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the address line").unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_owned();
        }
    };
    let mut printed = Vec::new();
    std::thread::spawn(move || lines.for_each(drop));
    let client = reqwest::blocking::Client::new();
    let live = format!("{url}/api/instances/live");
    let send = |url: &str, token: Option<&str>| {
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(send(&live, Some("good-secret-one")), 200);
    assert_eq!(send(&live, Some("bad-secret-two")), 401);
    assert_eq!(
        send(&format!("{live}?access_token=bad-secret-three"), None),
        401
    );
    assert_eq!(
        send(
            &format!("{url}/api/instances/stream?access_token=bad-secret-four&status=nope"),
            None
        ),
        401
    );
    assert_eq!(
        send(
            &format!("{url}/api/instances/live?access_token=good-secret-one&status=x"),
            None
        ),
        400
    );
    // A refused file (a token with a space) is logged by line number, not content.
    std::fs::write(&tokens, "leaked secret-five\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("loco_discovery_auth_refused_total"),
        "{metrics}"
    );
    printed.push(metrics);
    drop(running);
    printed.push(std::fs::read_to_string(&log).unwrap());
    let all = printed.join("\n");
    assert!(
        all.contains("auth-tokens"),
        "the refused file is logged: {all}"
    );
    for secret in ["good-secret-one", "bad-secret", "secret-five", "leaked"] {
        assert!(!all.contains(secret), "{secret} in the logs or metrics");
    }
}
