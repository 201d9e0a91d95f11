//! Headless Chromium driven through the DevTools protocol: open a page, evaluate script in it,
//! type into it, take a screenshot, and collect every console error and uncaught exception.
//! The browser tests (`tests/web.rs`) and `carousel bench web` use it.
//!
//! Chromium starts with `--remote-debugging-port=0` and says on stderr where its DevTools
//! socket is; the page's own target is found through `/json/list` and spoken to over one
//! WebSocket (tungstenite), one request at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Names the Chromium binary goes by (Debian's package installs `chromium`).
pub const BINARIES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// How long Chromium may take to start and open its DevTools socket.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long one DevTools call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// The Chromium binary on PATH, or why there is none.
pub fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for directory in std::env::split_paths(&path) {
        for name in BINARIES {
            let candidate = directory.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no headless Chromium: none of {BINARIES:?} on PATH (install Debian's `chromium`)"
    ))
}

/// A headless Chromium with one page open; it ends when dropped.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Console errors and uncaught exceptions, as they came.
    pub errors: Vec<String>,
}

impl Browser {
    /// Starts Chromium with a window of `width` × `height` and opens `url` in it.
    pub fn open(url: &str, size: (u32, u32)) -> Result<Browser, String> {
        Self::open_with(url, size, None)
    }

    /// [`Self::open`], running `script` in the page before its own scripts (a test's probe).
    pub fn open_with(
        url: &str,
        (width, height): (u32, u32),
        script: Option<&str>,
    ) -> Result<Browser, String> {
        let profile =
            tempfile::tempdir().map_err(|error| format!("a profile directory: {error}"))?;
        let mut child = Command::new(chromium()?)
            .args([
                "--headless",
                // Root (CI containers) cannot use Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("chromium does not start: {error}"))?;
        let connected = connect(&mut child);
        let socket = match connected {
            Ok(socket) => socket,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            next_id: 0,
            errors: Vec::new(),
        };
        browser.call("Runtime.enable", json!({}))?;
        browser.call("Log.enable", json!({}))?;
        browser.call("Page.enable", json!({}))?;
        if let Some(script) = script {
            browser.call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": script }),
            )?;
        }
        browser.call("Page.navigate", json!({ "url": url }))?;
        Ok(browser)
    }

    /// Notes an event that reports an error.
    fn event(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "exception: {}",
                params["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .or(params["exceptionDetails"]["text"].as_str())
                    .unwrap_or("?")
            )),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .errors
                .push(format!("console.error: {}", params["args"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => self
                .errors
                .push(format!("log: {}", params["entry"]["text"])),
            _ => {}
        }
    }

    /// Calls DevTools method `method`; its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(Message::Text(request.into()))
            .map_err(|error| format!("{method}: {error}"))?;
        let until = Instant::now() + CALL_LIMIT;
        while Instant::now() < until {
            let message = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(error) => return Err(format!("{method}: {error}")),
            };
            let message: Value =
                serde_json::from_str(message.as_str()).map_err(|error| error.to_string())?;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(message["result"].clone());
            }
            self.event(&message);
        }
        Err(format!("{method}: no answer within {CALL_LIMIT:?}"))
    }

    /// Reads events for `time` (errors among them are kept).
    pub fn pump(&mut self, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            if let Ok(Message::Text(text)) = self.socket.read() {
                if let Ok(message) = serde_json::from_str::<Value>(text.as_str()) {
                    self.event(&message);
                }
            }
        }
    }

    /// The value of the script expression `expression` in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it is true (or any value but false, null and
    /// undefined), at most `limit`; that value.
    pub fn wait_for(&mut self, expression: &str, limit: Duration) -> Result<Value, String> {
        let until = Instant::now() + limit;
        loop {
            let value = self.eval(expression).unwrap_or(Value::Null);
            if !(value.is_null() || value == Value::Bool(false)) {
                return Ok(value);
            }
            if Instant::now() >= until {
                return Err(format!("{expression} did not come true within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Focuses the element `selector` and types `text` into it as keystrokes, then Enter.
    pub fn type_line(&mut self, selector: &str, text: &str) -> Result<(), String> {
        let focused = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.focus(); return true; }})()",
            json!(selector)
        ))?;
        if focused != Value::Bool(true) {
            return Err(format!("no element {selector}"));
        }
        for character in text.chars() {
            let text = character.to_string();
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": "keyDown", "text": text, "key": text, "unmodifiedText": text }),
            )?;
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": "keyUp", "key": text }),
            )?;
        }
        let enter = json!({ "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13 });
        let mut down = enter.clone();
        down["type"] = json!("keyDown");
        down["text"] = json!("\r");
        self.call("Input.dispatchKeyEvent", down)?;
        let mut up = enter;
        up["type"] = json!("keyUp");
        self.call("Input.dispatchKeyEvent", up)?;
        Ok(())
    }

    /// A PNG of the whole page, `width` wide, into `path`.
    pub fn screenshot(&mut self, path: &Path, width: u32) -> Result<(), String> {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")?
            .as_u64()
            .unwrap_or(1_000)
            .clamp(200, 8_000);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        // Let the page lay out at the new size (its charts redraw at their next flush).
        self.pump(Duration::from_millis(500));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .map_err(|error| error.to_string())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
        }
        std::fs::write(path, data).map_err(|error| format!("{}: {error}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the DevTools socket Chromium `child` opened and connects to its first page.
fn connect(child: &mut Child) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, String> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (found, listening) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("ws://") {
                let _ = found.send(line[at..].trim().to_string());
            }
        }
    });
    let browser_url = listening
        .recv_timeout(START_LIMIT)
        .map_err(|_| "chromium did not open its DevTools socket".to_string())?;
    let port = browser_url
        .trim_start_matches("ws://")
        .split(['/', ':'])
        .nth(1)
        .ok_or("no DevTools port")?
        .to_string();
    let page = page_socket(&port)?;
    let (socket, _) = tungstenite::connect(page.as_str())
        .map_err(|error| format!("DevTools socket {page}: {error}"))?;
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    }
    Ok(socket)
}

/// The DevTools WebSocket URL of Chromium's first page, from `/json/list` on `port`.
fn page_socket(port: &str) -> Result<String, String> {
    let until = Instant::now() + START_LIMIT;
    loop {
        if let Ok(list) = http_get(&format!("127.0.0.1:{port}"), "/json/list") {
            if let Ok(Value::Array(targets)) = serde_json::from_str::<Value>(&list) {
                if let Some(url) = targets
                    .iter()
                    .find(|target| target["type"] == "page")
                    .and_then(|target| target["webSocketDebuggerUrl"].as_str())
                {
                    return Ok(url.to_string());
                }
            }
        }
        if Instant::now() >= until {
            return Err("chromium lists no page".to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of `GET path` from `host`: read up to its `Content-Length` (Chromium's DevTools
/// server keeps the connection open).
pub fn http_get(host: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
