//! The binary as a user runs it: configuration errors before binding, the embedded defaults,
//! and graceful shutdown on SIGTERM with a stream in flight.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly on anything unexpected"
)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cognitude_mock_llm::{MockConfig, MockServer};

fn cognitude() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cognitude"));
    // A clean environment: no provider keys, no config from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.ends_with("_API_KEY") || k.starts_with("COGNITUDE_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cognitude-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends a raw HTTP/1.1 request and returns the status and the whole response text.
fn http(port: u16, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn wait_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("cognitude exited early: {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cognitude did not start listening on {port}");
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "cognitude did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_config_fails_before_binding_and_names_the_key() {
    let dir = temp_dir("bad");
    let port = free_port();
    let cases = [
        (
            format!("[server]\nlisten = \"127.0.0.1:{port}\"\nmax_body_byte = 5\n"),
            "server.max_body_byte",
        ),
        (
            format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[upstream]\ntotal_timeout_ms = 0\n"),
            "upstream.total_timeout_ms",
        ),
        (
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[[models]]\nname = \"m\"\nprovider = \"nowhere\"\n"
            ),
            "models[0].provider",
        ),
        (
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nextra_root_certificates = [\"missing-ca.pem\"]\n"
            ),
            "alerts.extra_root_certificates",
        ),
    ];
    for (text, key) in cases {
        let cfg = write(&dir, "bad.toml", &text);
        for sub in ["serve", "check-config"] {
            let out = cognitude()
                .arg("--config")
                .arg(&cfg)
                .arg(sub)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{sub} accepted a bad config");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(key),
                "{sub}: stderr does not name {key}: {err}"
            );
        }
        // Nothing bound the port.
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}

#[test]
fn check_config_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cognitude.example.toml");
    let out = cognitude()
        .arg("--config")
        .arg(&example)
        .arg("check-config")
        .env("OPENAI_API_KEY", "sk-test-not-real")
        .env("ANTHROPIC_API_KEY", "sk-test-not-real")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration is valid"));
    assert!(
        stdout.contains("gpt-4o-mini -> openai:gpt-4o-mini (fallbacks: claude-haiku-4-5)"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-test-not-real"), "a key was printed");
}

/// Runs `cognitude` with `args` in `dir` and returns its stdout; fails the test on a non-zero exit.
fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = cognitude().args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "cognitude {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `cognitude` in `dir` and collects its stdout lines as they come.
fn spawn_collecting(mut cmd: Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// The quickstart key printed at first start.
fn quickstart_key(rx: &std::sync::mpsc::Receiver<String>, log: &mut Vec<String>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        log.push(line.clone());
        let t = line.trim();
        if t.starts_with("cgk_") && !t.contains(' ') {
            return Some(t.to_owned());
        }
    }
    None
}

#[test]
fn embedded_defaults_serve_the_mock_with_no_config_and_no_keys() {
    let dir = temp_dir("defaults");
    let port = free_port();
    let mut cmd = cognitude();
    cmd.current_dir(&dir)
        .env("COGNITUDE_LISTEN", format!("127.0.0.1:{port}"));
    let (mut child, rx) = spawn_collecting(cmd);
    let mut log = Vec::new();
    let key =
        quickstart_key(&rx, &mut log).unwrap_or_else(|| panic!("no quickstart key: {log:#?}"));
    wait_ready(port, &mut child);
    let (status, resp) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &key,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello proxy"}]}"#,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("hello proxy"));
    assert!(resp.to_ascii_lowercase().contains("x-cognitude-cost-usd"));
    let (status, _) = http(port, "GET", "/health", "", "");
    assert_eq!(status, 200);
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert!(
        log.contains("MOCK provider"),
        "no prominent mock notice: {log}"
    );
    // The embedded database is a file in the working directory; the ledger holds the request.
    assert!(dir.join("cognitude.db").exists());

    // A second start finds the organization and prints no new key; the old key still works.
    let mut cmd = cognitude();
    cmd.current_dir(&dir)
        .env("COGNITUDE_LISTEN", format!("127.0.0.1:{port}"));
    let (mut child, rx) = spawn_collecting(cmd);
    wait_ready(port, &mut child);
    let (status, _) = http(port, "GET", "/v1/models", &key, "");
    assert_eq!(status, 200);
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
    let second: Vec<String> = rx.try_iter().collect();
    assert!(
        !second.iter().any(|l| l.trim().starts_with("cgk_")),
        "a second key was printed: {second:#?}"
    );
}

#[test]
fn orgs_and_keys_from_the_command_line() {
    let dir = temp_dir("cli-keys");
    let cfg = write(
        &dir,
        "c.toml",
        &format!("[database]\nurl = \"sqlite://{}/c.db\"\n", dir.display()),
    );
    let c = cfg.to_str().unwrap();
    assert!(run_ok(&dir, &["--config", c, "migrate"]).contains("up to date"));
    let name = "Ünïcode \"Team\" 🚀";
    assert!(run_ok(&dir, &["--config", c, "orgs", "create", name]).contains(name));
    let out = run_ok(
        &dir,
        &[
            "--config", c, "keys", "create", "--org", name, "--name", "ci",
        ],
    );
    let secret = out.lines().last().unwrap().trim().to_owned();
    assert!(secret.starts_with("cgk_") && secret.len() == 65, "{out}");
    let listed = run_ok(&dir, &["--config", c, "keys", "list", "--org", name]);
    let prefix = &secret[..16];
    assert!(
        listed.contains(prefix) && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "a secret was listed");
    // Rate limits: flags change only what they name; 0 lifts a limit; --reset drops them.
    let limits = |args: &[&str]| {
        let mut all = vec!["--config", c, "orgs", "limits", name];
        all.extend_from_slice(args);
        run_ok(&dir, &all)
    };
    let out = limits(&["--rpm", "600", "--max-concurrent", "5"]);
    assert!(
        out.contains("rpm=600") && out.contains("max_concurrent=5"),
        "{out}"
    );
    let out = limits(&["--tpm", "0"]);
    assert!(
        out.contains("rpm=600") && out.contains("tpm=unlimited"),
        "{out}"
    );
    assert!(limits(&[]).contains("rpm=600"));
    assert!(limits(&["--reset"]).contains("rpm=default"));
    let out = cognitude()
        .args(["--config", c, "orgs", "limits", name, "--rpm", "-3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'-3'"));
    let out = run_ok(
        &dir,
        &["--config", c, "keys", "limits", prefix, "--rpm", "7"],
    );
    assert!(out.contains("rpm=7"), "{out}");
    assert!(run_ok(&dir, &["--config", c, "keys", "revoke", prefix]).contains("revoked"));
    assert!(run_ok(&dir, &["--config", c, "keys", "list"]).contains("revoked"));
    let orgs = run_ok(&dir, &["--config", c, "orgs", "list"]);
    assert!(orgs.contains(name));
    // Unknown names are errors, not silence.
    let out = cognitude()
        .args(["--config", c, "keys", "create", "--org", "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    assert!(run_ok(&dir, &["--config", c, "orgs", "delete", name]).contains("deleted"));
}

#[test]
fn sigterm_lets_a_stream_in_flight_finish_then_exits_zero() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mock = rt
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = temp_dir("graceful");
    let port = free_port();
    let cfg = write(
        &dir,
        "cognitude.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}/g.db\"\n[ledger]\nspill_path = \"{}/g.spill\"\n[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\n[[models]]\nname = \"m\"\nprovider = \"up\"\n",
            dir.display(),
            dir.display(),
            mock.base_url()
        ),
    );
    let c = cfg.to_str().unwrap();
    run_ok(&dir, &["--config", c, "orgs", "create", "g"]);
    let key = run_ok(&dir, &["--config", c, "keys", "create", "--org", "g"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let mut child = cognitude()
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);

    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"@mock{\"words\": 15, \"chunk_delay_ms\": 80}"}]}"#;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    // Wait for the first event, then signal.
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("data:") {
            break;
        }
    }
    sigterm(&child);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap_or_default();
    assert!(
        rest.contains("data: [DONE]"),
        "stream was cut by shutdown: {rest}"
    );
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
    assert_eq!(mock.stats().streams_completed(), 1);
    // New connections are refused once it has stopped.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn analyze_prints_an_orgs_recommendations_or_says_why_there_are_none() {
    let dir = temp_dir("analyze");
    let db = format!("sqlite://{}/a.db", dir.display());
    let cfg = write(&dir, "c.toml", &format!("[database]\nurl = \"{db}\"\n"));
    let c = cfg.to_str().unwrap();
    run_ok(&dir, &["--config", c, "orgs", "create", "quiet"]);
    run_ok(&dir, &["--config", c, "orgs", "create", "busy"]);
    let out = run_ok(&dir, &["--config", c, "analyze", "--org", "quiet"]);
    assert!(
        out.contains("No recommendations") && out.contains("0 records"),
        "{out}"
    );

    // 200 identical requests an hour ago, a quarter of a second apart, each paid $0.01 with the
    // cache off: 199 repeats.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = cognitude_store::Store::connect(&db).await.unwrap();
        let org = store.org_by_name("busy").await.unwrap().unwrap();
        let now = cognitude_store::now_micros();
        let records: Vec<cognitude_store::UsageRecord> = (0..200i64)
            .map(|i| cognitude_store::UsageRecord {
                id: format!("rec_cli_{i:03}"),
                request_id: format!("req_{i}"),
                org_id: org.id.clone(),
                created_at: now - 3_600_000_000 + i * 250_000,
                endpoint: "chat_completions".into(),
                model_requested: "gpt-4o-mini".into(),
                model_used: Some("gpt-4o-mini".into()),
                status: 200,
                prompt_tokens: 40,
                completion_tokens: 10,
                cost_pico: 10_000_000_000,
                cache_status: Some("off".into()),
                request_hash: "cd".repeat(32),
                prefix_hash: "ab".repeat(32),
                ..cognitude_store::UsageRecord::default()
            })
            .collect();
        assert_eq!(store.insert_usage(&records).await.unwrap(), 200);
    });

    // Over a 7-day window: 199 × $0.01 × 30 / 7 = $8.53 a month.
    let out = run_ok(
        &dir,
        &["--config", c, "analyze", "--org", "busy", "--window", "7d"],
    );
    assert!(out.contains("200 records"), "{out}");
    let first = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("no ranked line: {out}"));
    assert!(first.contains("$8.53") && first.contains("cache"), "{out}");
    assert!(out.contains("Turn the response cache on"), "{out}");
    assert!(
        out.contains("Total estimated saving: $8.53 a month (1 recommendation)"),
        "{out}"
    );

    for (args, needle) in [
        (vec!["analyze", "--org", "busy", "--window", "9w"], "9w"),
        (vec!["analyze", "--org", "nobody"], "nobody"),
    ] {
        let out = cognitude()
            .args(["--config", c])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
