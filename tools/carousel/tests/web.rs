//! The web page's server (`carousel run --web`, `carousel view`): its security rules over plain
//! HTTP and WebSocket (no browser), then, ignored by default (`--include-ignored`, ci/test), the
//! page in headless Chromium: a devcheck lab driven from the page, and a finished trace.

#[path = "support/synthetic.rs"]
mod synthetic;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carousel::web::hub::{Control, Hub, Limits, Mode};
use carousel::web::Server;
use carousel_protocol::record::Record;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

/// A live hub of two VMs, served on loopback; its controls.
fn serve() -> (Server, Arc<Hub>, Receiver<Control>) {
    let names = ["a".to_string(), "b".to_string()];
    let (hub, controls) = Hub::new(Mode::Live, &names, Limits::LIVE);
    let server = Server::start(carousel::web::DEFAULT_ADDR, hub.clone()).expect("it binds");
    (server, hub, controls)
}

/// One HTTP/1.0 request for `target` with `headers` (`Host` is the server's unless given):
/// the status and the body.
fn get(server: &Server, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = server.addr();
    let mut stream = TcpStream::connect(addr).expect("it connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {target} HTTP/1.0\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string());
    (status, body)
}

#[test]
fn every_request_needs_the_token() {
    let (server, _hub, _controls) = serve();
    let token = server.token().to_string();
    assert!(
        server.url().starts_with("http://127.0.0.1:"),
        "loopback by default"
    );
    assert!(server.url().ends_with(&format!("/?t={token}")));
    for path in ["/", "/page.js", "/page.css"] {
        assert_eq!(get(&server, path, &[]).0, 403, "{path} without a token");
        assert_eq!(get(&server, &format!("{path}?t=00"), &[]).0, 403);
        let wrong: String = token.chars().rev().collect();
        assert_eq!(get(&server, &format!("{path}?t={wrong}"), &[]).0, 403);
        let (status, body) = get(&server, &format!("{path}?t={token}"), &[]);
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains("__TOKEN__"));
    }
    let (_, page) = get(&server, &format!("/?t={token}"), &[]);
    assert!(page.contains(&format!("page.js?t={token}")));
}

#[test]
fn other_origins_and_hosts_are_refused() {
    let (server, _hub, _controls) = serve();
    let target = format!("/?t={}", server.token());
    let own = format!("http://{}", server.addr());
    assert_eq!(get(&server, &target, &[("Origin", &own)]).0, 200);
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        assert_eq!(
            get(&server, &target, &[("Origin", origin)]).0,
            403,
            "{origin}"
        );
    }
    assert_eq!(
        get(&server, &target, &[("Sec-Fetch-Site", "cross-site")]).0,
        403
    );
    // A name that rebinds to 127.0.0.1 reaches the server with its own Host.
    assert_eq!(get(&server, &target, &[("Host", "evil.example")]).0, 403);
    let localhost = format!("localhost:{}", server.addr().port());
    assert_eq!(get(&server, &target, &[("Host", &localhost)]).0, 200);
}

#[test]
fn only_the_embedded_assets_are_served() {
    let (server, _hub, _controls) = serve();
    let token = server.token();
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("the manifest");
    for path in [
        "/index.html",
        "/web/page.js",
        "/../Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e/%2e%2e/Cargo.toml",
        "/page.js/../../Cargo.toml",
        "//etc/passwd",
        "/src/main.rs",
        "/Cargo.toml",
        "/etc/passwd",
    ] {
        let (status, body) = get(&server, &format!("{path}?t={token}"), &[]);
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{path}"
        );
        assert!(body.len() < 100, "{path}: {body}");
    }
    assert!(manifest.contains("[package]"), "the file the paths aim at");
    // The page's policy allows nothing from elsewhere.
    let addr = server.addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /?t={token} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let headers = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("content-security-policy: default-src 'none'"));
    assert!(headers.contains("x-content-type-options: nosniff"));
}

/// A WebSocket request to `server` with `token` and `origin`: the socket, or the status it was
/// refused with.
fn socket(
    server: &Server,
    token: &str,
    origin: Option<&str>,
) -> Result<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>, u16> {
    let url = format!("ws://{}/ws?t={token}", server.addr());
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match tungstenite::connect(request) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("{error}"),
    }
}

/// The next message's items.
fn read_items(
    socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
) -> Vec<Value> {
    loop {
        match socket.read().expect("a message") {
            tungstenite::Message::Text(text) => {
                return serde_json::from_str(text.as_str()).expect("a JSON array")
            }
            _ => continue,
        }
    }
}

#[test]
fn sockets_need_the_token_and_the_page_origin() {
    let (server, hub, controls) = serve();
    let own = format!("http://{}", server.addr());
    assert_eq!(socket(&server, "", Some(&own)).err(), Some(403));
    assert_eq!(socket(&server, "abc", None).err(), Some(403));
    assert_eq!(
        socket(&server, server.token(), Some("http://evil.example")).err(),
        Some(403)
    );
    let mut page = socket(&server, server.token(), Some(&own)).expect("the page's socket");
    let first = read_items(&mut page);
    assert_eq!(first[0]["mode"], "live");
    assert_eq!(first[0]["vms"], serde_json::json!(["a", "b"]));
    // Console text reaches the page as a JSON string (the page sets it as text).
    hub.console(Some(1), "<img src=x onerror=alert(1)>", None);
    let items = read_items(&mut page);
    assert!(items.contains(&serde_json::json!([
        "o",
        1,
        "<img src=x onerror=alert(1)>",
        null
    ])));
    // What the page types goes to the session as input for that VM.
    page.send(tungstenite::Message::Text(
        r#"{"type":"input","vm":1,"text":"ping\n"}"#.into(),
    ))
    .unwrap();
    let control = controls
        .recv_timeout(Duration::from_secs(5))
        .expect("a control");
    assert_eq!(
        control,
        Control::Input {
            vm: 1,
            text: "ping\n".to_string()
        }
    );
}

/// The knobs' messages reach the session as typed settings; a knob the server does not know,
/// a per-VM knob without its VM, or a value beyond `u32` is refused to the page, not passed on.
#[test]
fn the_page_knobs_become_settings() {
    use carousel_protocol::config::Setting;
    let (server, _hub, controls) = serve();
    let own = format!("http://{}", server.addr());
    let mut page = socket(&server, server.token(), Some(&own)).expect("the page's socket");
    let _setup = read_items(&mut page);
    for message in [
        r#"{"type":"set","knob":"quantum_us","vm":null,"value":2000}"#,
        r#"{"type":"set","knob":"weight","vm":1,"value":3}"#,
        r#"{"type":"set","knob":"cap","vm":0,"value":50}"#,
    ] {
        page.send(tungstenite::Message::Text(message.into()))
            .unwrap();
    }
    let received: Vec<Control> = (0..3)
        .map(|_| {
            controls
                .recv_timeout(Duration::from_secs(5))
                .expect("a control")
        })
        .collect();
    assert_eq!(
        received,
        [
            Control::Setting(Setting::Quantum { us: 2_000 }),
            Control::Setting(Setting::Weight { vm: 1, weight: 3 }),
            Control::Setting(Setting::Cap { vm: 0, cap_pct: 50 }),
        ]
    );
    for (message, why) in [
        (
            r#"{"type":"set","knob":"policy","vm":null,"value":1}"#,
            "no such knob",
        ),
        (
            r#"{"type":"set","knob":"weight","vm":null,"value":3}"#,
            "which VM",
        ),
        (
            r#"{"type":"set","knob":"quantum_us","vm":0,"value":3}"#,
            "not a VM's",
        ),
        (
            r#"{"type":"set","knob":"weight","vm":70000,"value":3}"#,
            "no VM 70000",
        ),
        (
            r#"{"type":"set","knob":"quantum_us","vm":null,"value":4294967296}"#,
            "too large",
        ),
    ] {
        page.send(tungstenite::Message::Text(message.into()))
            .unwrap();
        let reply = read_items(&mut page);
        assert_eq!(reply[0][0], "R", "{message}");
        assert!(
            reply[0][1].as_str().unwrap().contains(why),
            "{message}: {reply:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(controls.try_iter().count(), 0, "nothing refused went on");
}

#[test]
fn pages_at_once_are_bounded() {
    let (server, _hub, _controls) = serve();
    let own = format!("http://{}", server.addr());
    let mut pages: Vec<_> = (0..carousel::web::server::PAGES_MAX)
        .map(|_| {
            let mut page = socket(&server, server.token(), Some(&own)).expect("a socket");
            let _setup = read_items(&mut page);
            page
        })
        .collect();
    assert_eq!(socket(&server, server.token(), Some(&own)).err(), Some(503));
    // One closes: another may come.
    pages.pop().unwrap().close(None).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while server.page_count() >= carousel::web::server::PAGES_MAX && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket(&server, server.token(), Some(&own)).is_ok());
}

#[test]
fn input_is_rate_limited() {
    let (server, _hub, controls) = serve();
    let own = format!("http://{}", server.addr());
    let mut page = socket(&server, server.token(), Some(&own)).expect("the page's socket");
    let _setup = read_items(&mut page);
    // 1,000-byte lines: the input allowance (4 KiB at once) lets four through.
    let line = "x".repeat(1_000);
    let message = serde_json::json!({"type": "input", "vm": 0, "text": line}).to_string();
    for _ in 0..10 {
        page.send(tungstenite::Message::Text(message.clone().into()))
            .unwrap();
    }
    let mut replies = Vec::new();
    while replies.len() < 6 {
        replies.extend(read_items(&mut page));
    }
    assert!(replies
        .iter()
        .all(|reply| reply[0] == "R" && reply[1].as_str().unwrap().contains("rate limited")));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(controls.try_iter().count(), 4, "four lines through");
    // Too long for one message.
    let long = serde_json::json!({"type": "input", "vm": 0, "text": "y".repeat(5_000)});
    page.send(tungstenite::Message::Text(long.to_string().into()))
        .unwrap();
    let reply = read_items(&mut page);
    assert!(reply[0][1].as_str().unwrap().contains("too long"));
    // Controls of any kind: at most 40 at once.
    let end = r#"{"type":"end"}"#;
    for _ in 0..60 {
        page.send(tungstenite::Message::Text(end.into())).unwrap();
    }
    let mut slow_down = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while slow_down < 60 - 39 && Instant::now() < until {
        slow_down += read_items(&mut page)
            .iter()
            .filter(|reply| {
                reply[1]
                    .as_str()
                    .is_some_and(|text| text.contains("slow down"))
            })
            .count();
    }
    std::thread::sleep(Duration::from_millis(200));
    let ends = controls.try_iter().count();
    assert!((30..=40).contains(&ends), "{ends} controls through");
    assert!(slow_down >= 20, "{slow_down} refused");
}

#[test]
fn an_address_beyond_loopback_is_warned_about() {
    // `carousel view` on another address says so on stderr; on loopback it does not.
    let dir = tempfile::tempdir().unwrap();
    let trace = four_vm_trace(dir.path(), "com2.bin");
    for (addr, warned) in [("127.0.0.1", false), ("0.0.0.0", true)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_carousel"))
            .args(["view", trace.to_str().unwrap(), "--web", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = url_of(child.stdout.take().unwrap());
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.contains("anyone who can reach it"),
            warned,
            "{addr}: {stderr}"
        );
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert_eq!(output.status.code(), Some(0));
    }
}

#[test]
fn view_refuses_what_is_not_a_trace_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"not a trace at all").unwrap();
    for trace in [dir.path().join("missing.bin"), garbage] {
        let output = Command::new(env!("CARGO_BIN_EXE_carousel"))
            .args(["view", trace.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", trace.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("carousel view: "), "{stderr}");
    }
}

/// The URL a `carousel` process prints on `stdout` (the rest is read on a thread).
fn url_of(stdout: impl Read + Send + 'static) -> String {
    let mut lines = BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("[carousel] web page: ")
                .map(str::to_string)
        })
        .expect("carousel prints the URL");
    std::thread::spawn(move || for _ in lines {});
    url
}

// ---- In headless Chromium -------------------------------------------------------------------

/// Kills the `carousel` process of a test that failed before it ended.
struct Reaper(Option<u32>);

impl Reaper {
    /// The process ended (and was reaped): nothing to kill.
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

use carousel::web::browser::Browser;

/// Four devcheck VMs whose scripts wait for the verdict line but send nothing: the page types
/// each VM's `ping`.
const PAGE_TYPES_LAB: &str = r#"
[run]
quantum_us = 1000
ips = 1_000_000
tsc_hz = 50_000_000
timeout_s = 180

[run.disk]
latency_us = 200
"#;

fn page_types_lab() -> String {
    let mut lab = PAGE_TYPES_LAB.to_string();
    for vm in 0..4 {
        lab.push_str(&format!(
            "\n[[vm]]\nname = \"dev{vm}\"\nkernel = \"devcheck\"\nmemory_mib = 8\n\
             blank_disk_kib = 32\nargs = \"disk_sectors=64 expect_input=ping input_timeout_ms=55000\"\n\n\
             [[vm.script]]\nexpect = '^devcheck: all checks passed$'\n"
        ));
    }
    lab
}

/// `carousel report --format json` of `trace`, and its slices per VM.
fn report(trace: &Path) -> (Value, Vec<u64>) {
    let output = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["report", "--format", "json"])
        .arg(trace)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).expect("the JSON report");
    let slices = report["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["slices"].as_u64().unwrap())
        .collect();
    (report, slices)
}

/// The exits a JSON report counts, every reason's.
fn exit_count(report: &Value) -> u64 {
    report["exits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|exit| exit["count"].as_u64().unwrap())
        .sum()
}

/// The page's slices per VM (the CPU share chart's count).
fn page_slices(browser: &mut Browser) -> Vec<u64> {
    serde_json::from_str(
        browser
            .eval("document.getElementById('share').dataset.slices")
            .unwrap()
            .as_str()
            .unwrap_or("[]"),
    )
    .unwrap()
}

/// A number the page's script gives.
fn number(browser: &mut Browser, expression: &str) -> u64 {
    browser
        .eval(expression)
        .unwrap_or(Value::Null)
        .as_u64()
        .unwrap_or(0)
}

/// The synthetic run of four VMs a..d, written as `dir/name`.
fn four_vm_trace(dir: &Path, name: &str) -> std::path::PathBuf {
    synthetic::write_trace(dir, name, synthetic::synthetic_run(["a", "b", "c", "d"]))
}

/// Asserts the page recorded no error and the browser reported none.
fn assert_no_page_errors(browser: &mut Browser) {
    let page_errors = number(
        browser,
        "Number(document.getElementById('page-errors').dataset.count)",
    );
    assert_eq!(page_errors, 0);
    assert!(browser.errors.is_empty(), "{:?}", browser.errors);
}

/// Moves the page's time slider to `value` (a script expression over the slider `s`).
fn move_slider(browser: &mut Browser, value: &str) {
    browser
        .eval(&format!(
            "(() => {{ const s = document.getElementById('slider'); s.value = String({value}); \
             s.dispatchEvent(new Event('input')); return true; }})()"
        ))
        .unwrap();
}

/// The page's chart record counts, `#id`'s `data-records`.
fn records(browser: &mut Browser) -> Vec<u64> {
    ["share", "gantt", "donuts", "memory", "disk", "wakes"]
        .iter()
        .map(|id| {
            number(
                browser,
                &format!("Number(document.getElementById('{id}').dataset.records)"),
            )
        })
        .collect()
}

/// A devcheck lab run with `--web`: each VM's console shows in its pane as it comes, typing
/// `ping` into a pane makes that VM's input check pass, the charts' counts grow during the run
/// and match the report of its trace at the end, and the page has no error. With
/// `CAROUSEL_WEB_SCREENSHOT=FILE` the live page is saved there (the README's picture).
#[test]
#[ignore = "boots four devcheck VMs in Bochs and drives the page in headless Chromium"]
fn a_devcheck_lab_is_driven_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab.toml");
    std::fs::write(&lab, page_types_lab()).unwrap();
    let out = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args([
            "run",
            lab.to_str().unwrap(),
            "--backend",
            "bochs",
            "--web",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("carousel starts");
    let guard = Reaper(Some(child.id()));
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let url = url_of(child.stdout.take().unwrap());
    let mut browser = Browser::open(&url, (1400, 1000)).expect("Chromium opens the page");
    let wait = Duration::from_secs(240);
    browser
        .wait_for(
            "document.querySelectorAll('#consoles .pane').length === 5",
            wait,
        )
        .expect("four VM panes and the tool's");
    let mut early = None;
    for vm in 0..4 {
        let pane = format!("#consoles .pane[data-vm=\"{vm}\"]");
        browser
            .wait_for(
                &format!(
                    "document.querySelector('{pane} .log').textContent.includes('devcheck: waiting for input')"
                ),
                wait,
            )
            .unwrap_or_else(|error| panic!("dev{vm}: {error}"));
        if early.is_none() {
            early = Some(records(&mut browser));
            // The knobs, as a user sets them: the quantum, and dev1's weight.
            browser
                .eval(
                    "(() => { document.getElementById('knob-quantum_us').value = '2000'; \
                     document.getElementById('knob-vm').value = '1'; \
                     document.getElementById('knob-weight').value = '3'; \
                     document.getElementById('knob-set').click(); })()",
                )
                .expect("the knobs are set");
        }
        browser
            .type_line(&format!("{pane} input"), "ping")
            .expect("typed");
    }
    for vm in 0..4 {
        browser
            .wait_for(
                &format!(
                    "document.querySelector('#consoles .pane[data-vm=\"{vm}\"] .log').textContent.includes('devcheck: received \"ping\"')"
                ),
                Duration::from_secs(120),
            )
            .unwrap_or_else(|error| {
                let seen = browser.eval(&format!(
                    "JSON.stringify([document.querySelector('#consoles .pane[data-vm=\"{vm}\"] .log').textContent.slice(-600), \
                     document.querySelector('#consoles .pane[data-vm=\"{vm}\"] input').value, \
                     document.querySelector('#consoles .pane.hypervisor .log').textContent.slice(-800), \
                     document.getElementById('notice').textContent])"
                ));
                panic!("dev{vm}: {error}\n{seen:?}\n{:?}", browser.errors)
            });
    }
    if let Some(path) = std::env::var_os("CAROUSEL_WEB_SCREENSHOT") {
        browser
            .screenshot(Path::new(&path), 1400)
            .expect("a screenshot");
    }
    browser
        .wait_for(
            "document.getElementById('status').dataset.done === 'yes'",
            Duration::from_secs(180),
        )
        .expect("the page hears how the run ended");
    let status = browser
        .eval("document.getElementById('status').textContent")
        .unwrap();
    let status = status.as_str().unwrap_or("").to_string();
    let output = child.wait_with_output().expect("carousel ends");
    guard.done();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = stderr.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(status.contains("passed"), "{status}");
    // Each VM's line arrived in its own pane, escaped as text.
    for vm in 0..4 {
        let log = browser
            .eval(&format!(
                "document.querySelector('#consoles .pane[data-vm=\"{vm}\"] .log').textContent"
            ))
            .unwrap();
        let log = log.as_str().unwrap();
        assert!(
            log.contains("devcheck: all checks passed"),
            "dev{vm}'s pane ends: {:?}",
            &log[log.len().saturating_sub(400)..]
        );
    }
    // The counts grew and match the report of the trace.
    browser.pump(Duration::from_millis(500));
    let early = early.expect("counts taken early");
    let late = records(&mut browser);
    assert!(late.iter().zip(&early).all(|(late, early)| late >= early));
    assert!(
        late[0] > early[0] && late[1] > early[1],
        "{early:?} -> {late:?}"
    );
    let (report, slices) = report(&out.join("com2.bin"));
    assert_eq!(
        page_slices(&mut browser),
        slices,
        "slices per VM, page and report"
    );
    assert_eq!(late[0], slices.iter().sum::<u64>());
    // The knobs the page set were made, in band, as typed ones are.
    let settings = report["settings"].as_array().unwrap();
    for what in ["quantum 2 ms", "weight of dev1 3"] {
        assert!(
            settings.iter().any(|row| row["setting"] == what
                && row["made"] == true
                && row["source"] == "console"),
            "{what}: {settings:?}"
        );
    }
    let wakes: u64 = report["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["wake_latency"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(late[5], wakes, "wakes, page and report");
    let exits = exit_count(&report);
    let page_exits = number(
        &mut browser,
        "Number(document.getElementById('donuts').dataset.exits)",
    );
    assert_eq!(page_exits, exits, "exits, page and report");
    let transfers: u64 = report["disk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|disk| disk["reads"].as_u64().unwrap() + disk["writes"].as_u64().unwrap())
        .sum();
    assert_eq!(late[4], transfers, "disk transfers, page and report");
    // The disk is timed: the queue chart had every request the report counts.
    let requests: u64 = report["disk_queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["requests"].as_u64().unwrap())
        .sum();
    assert!(requests > 0, "the timed disk served requests");
    let page_requests = number(
        &mut browser,
        "Number(document.getElementById('disk-queue').dataset.records)",
    );
    assert_eq!(page_requests, requests, "disk requests, page and report");
    assert_no_page_errors(&mut browser);
}

/// `carousel view TRACE` and Chromium with a window of `size` on its page.
fn view(trace: &Path, size: (u32, u32)) -> (std::process::Child, Reaper, Browser) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["view", trace.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Reaper(Some(child.id()));
    let url = url_of(child.stdout.take().unwrap());
    let browser = Browser::open(&url, size).expect("Chromium opens the page");
    (child, guard, browser)
}

/// The page says the run is over only once it has drawn everything it got: a page, or a test,
/// that reads the consoles when it sees "done" finds every line there. (The consoles are drawn
/// on a timer; the status was set at once, so the live test, reading the panes when it saw
/// "done", now and then missed the last VM's last line.)
#[test]
#[ignore = "drives the page in headless Chromium"]
fn the_page_is_done_only_once_its_consoles_are_drawn() {
    // Counts each pane's lines in the same task as the status turns "done" (a mutation
    // observer runs before any timer).
    const PROBE: &str = "document.addEventListener('DOMContentLoaded', () => {
        const status = document.getElementById('status');
        new MutationObserver(() => {
            if (status.dataset.done === 'yes' && window.linesAtDone === undefined) {
                window.linesAtDone = [...document.querySelectorAll('#consoles .pane .log')]
                    .map((log) => log.childElementCount);
            }
        }).observe(status, { attributes: true, attributeFilter: ['data-done'] });
    });";
    let (server, hub, _controls) = serve();
    let mut browser =
        Browser::open_with(&server.url(), (1200, 900), Some(PROBE)).expect("Chromium opens");
    browser
        .wait_for(
            "document.body.dataset.rendered === 'yes'",
            Duration::from_secs(30),
        )
        .expect("the page draws");
    // The last lines and the end, at once (as a run's last poll publishes them).
    for line in 0..5 {
        hub.console(Some(1), &format!("b's line {line}"), None);
    }
    hub.console(None, "[carousel] the host ended the run", None);
    hub.status("passed", true);
    let at_done = browser
        .wait_for("window.linesAtDone", Duration::from_secs(30))
        .expect("the page hears the run ended");
    browser.pump(Duration::from_millis(500));
    let later = browser
        .eval("[...document.querySelectorAll('#consoles .pane .log')].map((log) => log.childElementCount)")
        .unwrap();
    assert!(
        later
            .as_array()
            .is_some_and(|panes| panes.iter().any(|lines| lines.as_u64() > Some(0))),
        "no console lines at all: {later}"
    );
    assert_eq!(
        at_done, later,
        "lines drawn when the page said done, and later"
    );
    assert_no_page_errors(&mut browser);
}

/// `carousel view` on a finished trace: the same page, with the consoles from com1.txt; at the
/// end of the slider the charts hold what the report counts, and halfway they hold less, with
/// only the console lines written before the cursor.
#[test]
#[ignore = "drives the page in headless Chromium"]
fn the_view_page_scrubs_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = synthetic::synthetic_run(["a", "b", "c", "d"]);
    // A served disk request whose wait no device could take (a corrupt trace): the page's
    // queue chart must not walk a bucket per 10 ms of it.
    let end = records.len() - 1;
    records.insert(
        end,
        Record::DiskServed {
            tsc: 500_000_000,
            vm: 1,
            sectors: 8,
            write: false,
            wait: u64::MAX / 4,
            service: 1_000,
        },
    );
    // A setting changed late in the run: a marker on both timelines, once the cursor passes it.
    records.insert(
        end,
        Record::SettingChanged {
            tsc: 1_800_000_000,
            setting: carousel_protocol::config::Setting::Quantum { us: 2_000 },
            source: carousel_protocol::record::ChangeSource::Lab,
        },
    );
    // A line that would be markup if the page took it as HTML.
    let com1 = synthetic::com1_text(&records) + "<img src=x onerror=window.pwned=1>\n";
    std::fs::write(dir.path().join("com1.txt"), com1).unwrap();
    let trace = synthetic::write_trace(dir.path(), "com2.bin", records);
    let (mut child, guard, mut browser) = view(&trace, (1400, 1000));
    browser
        .wait_for(
            "!document.getElementById('scrub').hidden",
            Duration::from_secs(30),
        )
        .expect("the slider opens");
    browser.pump(Duration::from_millis(300));
    let (_, slices) = report(&trace);
    assert_eq!(
        page_slices(&mut browser),
        slices,
        "at the end, as the report"
    );
    let markers = "['#gantt', '#share'].map((chart) => document.querySelectorAll(chart + ' .markers line').length)";
    assert_eq!(
        browser.eval(markers).unwrap(),
        serde_json::json!([1, 1]),
        "the setting's marker on both timelines"
    );
    // A finished trace has no run to control: no knobs, no end button.
    let shown = browser
        .eval(
            "['knobs', 'end-run'].filter((id) => getComputedStyle(document.getElementById(id)).display !== 'none').join()",
        )
        .unwrap();
    assert_eq!(shown, "", "controls shown over a trace");
    let lines = |browser: &mut Browser| {
        number(
            browser,
            "Number(document.querySelector('.pane[data-vm=\"0\"]').dataset.lines)",
        )
    };
    let all_lines = lines(&mut browser);
    assert!(all_lines > 2, "{all_lines} console lines");
    // Halfway.
    move_slider(&mut browser, "(Number(s.min) + Number(s.max)) / 2");
    browser.pump(Duration::from_millis(300));
    let half = page_slices(&mut browser);
    for (half, all) in half.iter().zip(&slices) {
        assert!(*half > 0 && half < all, "{half} of {all} slices halfway");
    }
    assert_eq!(
        browser.eval(markers).unwrap(),
        serde_json::json!([0, 0]),
        "no marker before the change"
    );
    let half_lines = lines(&mut browser);
    assert!(
        half_lines > 0 && half_lines < all_lines,
        "{half_lines} of {all_lines} lines"
    );
    // One second after the first event: each VM's running time is that of the first ten
    // 100 ms intervals of `carousel report --interval 100`.
    move_slider(&mut browser, "Number(s.min) + 1e9");
    browser.pump(Duration::from_millis(300));
    let intervals = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["report", "--interval", "100", "--format", "json"])
        .arg(&trace)
        .output()
        .unwrap();
    let intervals: Value = serde_json::from_slice(&intervals.stdout).expect("JSON intervals");
    let expected: Vec<u64> = (0..4)
        .map(|vm| {
            intervals["intervals"].as_array().unwrap()[..10]
                .iter()
                .map(|interval| interval["vms"][vm]["running_cycles"].as_u64().unwrap())
                .sum()
        })
        .collect();
    let running: Vec<u64> = serde_json::from_str(
        browser
            .eval("document.getElementById('share').dataset.running")
            .unwrap()
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        running, expected,
        "running cycles in the first second, page and --interval"
    );
    let hostile = browser
        .eval(
            "[document.querySelector('.pane.hypervisor .log').textContent.includes('<img src=x'), \
             document.querySelectorAll('#consoles img').length, typeof window.pwned]",
        )
        .unwrap();
    assert_eq!(
        hostile,
        serde_json::json!([true, 0, "undefined"]),
        "text, not markup"
    );
    assert_no_page_errors(&mut browser);
    drop(guard);
    let _ = child.wait();
}

/// `carousel report --html`: the report page draws with the web page's own charts, offline. At
/// the end of its slider they hold what the JSON report counts (slices per VM, exits, disk
/// sectors); halfway they hold less; a narrower Gantt window shows fewer bars; and the page has
/// no error and asks for nothing over the network.
#[test]
#[ignore = "drives the page in headless Chromium"]
fn the_report_page_draws_with_the_live_pages_charts() {
    let dir = tempfile::tempdir().unwrap();
    let trace = four_vm_trace(dir.path(), "run.trace");
    let html = dir.path().join("report.html");
    let status = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["report", "--format", "json", "--html"])
        .arg(&html)
        .arg(&trace)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let mut browser = Browser::open(&url, (1400, 1000)).expect("Chromium opens the report");
    browser
        .wait_for(
            "document.body.dataset.rendered === 'yes' && !document.getElementById('scrub').hidden",
            Duration::from_secs(30),
        )
        .expect("the report draws and its slider opens");
    let (report, slices) = report(&trace);
    assert_eq!(page_slices(&mut browser), slices, "slices, page and report");
    let exits = exit_count(&report);
    assert_eq!(
        number(
            &mut browser,
            "Number(document.getElementById('donuts').dataset.exits)"
        ),
        exits,
        "exits, donuts and report"
    );
    let sectors: u64 = report["disk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["reads"].as_u64().unwrap() + vm["writes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        number(
            &mut browser,
            "Number(document.getElementById('disk').dataset.sectors)"
        ),
        sectors,
        "sectors, disk grid and report"
    );
    for (id, count) in ["share", "gantt", "donuts", "memory", "disk", "wakes"]
        .iter()
        .zip(records(&mut browser))
    {
        assert!(count > 0, "#{id} drew nothing");
    }
    // The synthetic backup VM blocks on its disk: amber bars of their own.
    let on_disk = number(
        &mut browser,
        "document.querySelectorAll('#gantt g[data-kind=\"3\"] rect').length",
    );
    assert!(on_disk > 0, "no blocked-on-disk bars");
    // No consoles and no controls on a report; nothing but the file itself was loaded.
    let absent = browser
        .eval(
            "[document.getElementById('consoles'), document.getElementById('knobs')].filter(Boolean).length",
        )
        .unwrap();
    assert_eq!(absent, serde_json::json!(0));
    let loaded = browser
        .eval("performance.getEntriesByType('resource').length")
        .unwrap();
    assert_eq!(loaded, serde_json::json!(0), "the report fetched something");
    // Halfway, fewer slices.
    move_slider(&mut browser, "(Number(s.min) + Number(s.max)) / 2");
    let half = page_slices(&mut browser);
    for (half, all) in half.iter().zip(&slices) {
        assert!(*half > 0 && half < all, "{half} of {all} slices halfway");
    }
    // A 10 ms window: the bars that show are those of the last 10 ms before the cursor, each
    // slice its own bar, where the whole run merged them.
    let bars = |browser: &mut Browser| {
        number(
            browser,
            "document.querySelectorAll('#gantt svg g[data-vm] rect').length",
        )
    };
    let whole = bars(&mut browser);
    browser
        .eval(
            "(() => { const w = document.getElementById('gantt-window'); w.value = '0.01'; \
             w.dispatchEvent(new Event('change')); return true; })()",
        )
        .unwrap();
    let close = bars(&mut browser);
    assert!(
        close > 0 && close != whole,
        "{close} bars in 10 ms, {whole} in the whole run"
    );
    let note = browser
        .eval("document.querySelector('#gantt .axis-note').textContent")
        .unwrap();
    assert!(
        note.as_str().unwrap_or("").contains(" to 1."),
        "the window ends at the cursor: {note}"
    );
    assert_no_page_errors(&mut browser);
}

/// `carousel bench web --json`: the page draws every slice of the synthetic run, skips nothing,
/// and the figures add up (records a second from records and seconds, bytes a record from the
/// bytes sent).
#[test]
#[ignore = "drives the page in headless Chromium for about 15 s"]
fn the_web_bench_measures_a_page_that_keeps_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_carousel"))
        .args(["bench", "web", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bench: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let records = bench["records"].as_f64().unwrap();
    let seconds = bench["seconds"].as_f64().unwrap();
    assert!(records > 10_000.0 && seconds > 0.0);
    assert_eq!(bench["skipped"], 0);
    let rate = bench["records_per_s"].as_f64().unwrap();
    assert!((rate - records / seconds).abs() < 1.0);
    let per_record = bench["bytes_per_record"].as_f64().unwrap();
    let sent = bench["bytes_sent"].as_f64().unwrap();
    assert!(per_record > 10.0 && (per_record - sent / records).abs() < 0.01);
    assert!(bench["console_lines"].as_u64().unwrap() > 1_000);
}

/// Sixteen VMs' panes fit one 1280 × 800 screen, four a row, and clicking a pane's title makes
/// it large (the whole row), and again makes it small.
#[test]
#[ignore = "drives the page in headless Chromium"]
fn sixteen_panes_fit_one_screen_and_a_click_enlarges_one() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("com2.bin");
    let (bytes, _) = carousel::commands::bench::decode::synthetic_trace(200_000);
    std::fs::write(&trace, bytes).unwrap();
    let (mut child, guard, mut browser) = view(&trace, (1280, 800));
    browser
        .wait_for(
            "document.querySelectorAll('#consoles .pane').length === 17",
            Duration::from_secs(30),
        )
        .expect("16 VM panes and the tool's");
    let layout = |browser: &mut Browser| -> Value {
        browser
            .eval(
                "(() => { const r = Array.from(document.querySelectorAll('#consoles .pane:not(.hypervisor)'))\
                 .map(p => p.getBoundingClientRect()); return { bottom: Math.max(...r.map(x => x.bottom)), \
                 height: innerHeight, lefts: new Set(r.map(x => Math.round(x.left))).size, \
                 width: r[5].width, other: r[0].width }; })()",
            )
            .unwrap()
    };
    let grid = layout(&mut browser);
    assert_eq!(grid["lefts"], 4, "four a row: {grid}");
    assert!(
        grid["bottom"].as_f64().unwrap() <= grid["height"].as_f64().unwrap(),
        "all on one screen: {grid}"
    );
    browser
        .eval("document.querySelector('#consoles .pane[data-vm=\"5\"] h2').click()")
        .unwrap();
    let big = layout(&mut browser);
    assert!(
        big["width"].as_f64().unwrap() > 3.0 * big["other"].as_f64().unwrap(),
        "the clicked pane is large: {big}"
    );
    browser
        .eval("document.querySelector('#consoles .pane[data-vm=\"5\"] h2').click()")
        .unwrap();
    let small = layout(&mut browser);
    assert_eq!(small["width"], small["other"], "and small again: {small}");
    assert!(browser.errors.is_empty(), "{:?}", browser.errors);
    drop(guard);
    let _ = child.wait();
}

/// A page that comes late to a console longer than the backlog sees the newest lines and a
/// notice of how many it skipped.
#[test]
#[ignore = "drives the page in headless Chromium"]
fn a_page_behind_the_backlog_is_told_it_skipped_ahead() {
    let names = ["a".to_string(), "b".to_string()];
    let limits = Limits {
        console_lines: 5,
        ..Limits::LIVE
    };
    let (hub, _controls) = Hub::new(Mode::Live, &names, limits);
    for line in 0..50 {
        hub.console(Some(1), &format!("line {line}"), None);
    }
    let server = Server::start(carousel::web::DEFAULT_ADDR, hub.clone()).expect("it binds");
    let mut browser = Browser::open(&server.url(), (1280, 800)).expect("Chromium opens the page");
    let log = "document.querySelector('.pane[data-vm=\"1\"] .log')";
    browser
        .wait_for(
            &format!("{log}.textContent.includes('line 49')"),
            Duration::from_secs(30),
        )
        .expect("the newest line");
    let seen = browser
        .eval(&format!(
            "Array.from({log}.children).map(line => line.textContent)"
        ))
        .unwrap();
    let seen: Vec<String> = serde_json::from_value(seen).unwrap();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().any(|line| line.contains("45 lines skipped")),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("line 49"));
    assert!(browser.errors.is_empty(), "{:?}", browser.errors);
}
