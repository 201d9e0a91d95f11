//! The HTTP and WebSocket server (axum on a one-thread tokio runtime): the page's three
//! embedded assets and one socket per page, every request checked first ([`guard`]).
//!
//! The rules: the token (`?t=`) on every request and socket; a `Host` the server answers to
//! (so a name that rebinds to this address is refused); no `Origin` but the page's own, and no
//! request a browser marks cross-site; only the paths in [`ASSETS`] and `/ws`, served from
//! memory (no path from a request reaches the file system). What a page sends over its socket
//! is rate-limited ([`super::limit`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use carousel_protocol::config::Setting;
use carousel_trace::render::web;

use super::hub::{Control, Cursor, Hub};
use super::limit::Bucket;

/// The page, its script and its style (`carousel-trace`'s, embedded at build time).
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", web::PAGE_HTML),
    (
        "/page.js",
        "text/javascript; charset=utf-8",
        web::PAGE_SCRIPT,
    ),
    ("/page.css", "text/css; charset=utf-8", web::PAGE_STYLE),
];

/// Where the page's assets name the token (the HTML links its script and style with it).
const TOKEN_MARK: &str = "__TOKEN__";

/// The page's Content-Security-Policy: its own script, style and socket, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src \
                      'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// Console input a page may send: bytes at once, and bytes a second after that.
pub const INPUT_BURST: u32 = 4_096;
pub const INPUT_RATE: u32 = 1_024;
/// Control messages (input lines included) a page may send: at once, and a second.
pub const CONTROL_BURST: u32 = 40;
pub const CONTROL_RATE: u32 = 10;
/// Longest text one input message may carry.
pub const INPUT_MAX: usize = 1_024;
/// Pages connected at once (each holds a cursor and builds its own messages): more are refused.
pub const PAGES_MAX: usize = 8;

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    pub hub: Arc<Hub>,
    pub token: String,
    /// `Host` values the server answers to; empty: any (bound to every address).
    pub hosts: Vec<String>,
    /// Pages connected, by number: the hub version each has taken everything up to.
    pages: Mutex<HashMap<u64, u64>>,
    next_page: AtomicU64,
    /// Bytes of messages sent to pages, in all (`carousel bench web`).
    sent: AtomicU64,
}

impl App {
    pub fn new(hub: Arc<Hub>, token: String, hosts: Vec<String>) -> Self {
        Self {
            hub,
            token,
            hosts,
            pages: Mutex::new(HashMap::new()),
            next_page: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// True when every connected page has taken everything published up to `version`.
    pub fn pages_have(&self, version: u64) -> bool {
        self.pages
            .lock()
            .map(|pages| pages.values().all(|&seen| seen >= version))
            .unwrap_or(true)
    }

    /// Pages connected now.
    pub fn page_count(&self) -> usize {
        self.pages.lock().map(|pages| pages.len()).unwrap_or(0)
    }

    /// Bytes of messages sent to pages so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn set_page(&self, page: u64, version: Option<u64>) {
        if let Ok(mut pages) = self.pages.lock() {
            match version {
                Some(version) => {
                    pages.insert(page, version);
                }
                None => {
                    pages.remove(&page);
                }
            }
        }
    }
}

/// The `Host` values a server bound to `addr` answers to: the address itself, and for
/// loopback `localhost` too; none (any) when bound to every address.
pub fn hosts(addr: SocketAddr) -> Vec<String> {
    if addr.ip().is_unspecified() {
        return Vec::new();
    }
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    hosts
}

/// The router of the page's assets and its socket.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for (path, _, _) in ASSETS {
        router = router.route(path, get(asset));
    }
    router
        .route("/ws", get(socket))
        .fallback(not_found)
        .with_state(app)
}

/// The query every request carries.
#[derive(Debug, Deserialize)]
pub struct Access {
    t: Option<String>,
}

/// Why a request was refused: its status and the sentence the response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.why),
        )
            .into_response()
    }
}

fn refuse(status: StatusCode, why: &'static str) -> Refusal {
    Refusal { status, why }
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a request: its `Host`, its `Origin` and the browser's `Sec-Fetch-Site`, and the
/// token. The refusal says which rule failed.
pub fn guard(app: &App, headers: &HeaderMap, access: &Access) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !app.hosts.is_empty() && !app.hosts.iter().any(|allowed| allowed == host) {
        return Err(refuse(StatusCode::FORBIDDEN, "forbidden: unknown Host"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        if origin.to_str().ok() != Some(format!("http://{host}").as_str()) {
            return Err(refuse(StatusCode::FORBIDDEN, "forbidden: another origin"));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site")
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden: a cross-site request",
        ));
    }
    match &access.t {
        Some(token) if same(token, &app.token) => Ok(()),
        _ => Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden: no valid token (open the URL carousel printed)",
        )),
    }
}

async fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, "not found").into_response()
}

async fn asset(
    State(app): State<Arc<App>>,
    uri: axum::http::Uri,
    Query(access): Query<Access>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = guard(&app, &headers, &access) {
        return refused.into_response();
    }
    let Some(&(_, kind, body)) = ASSETS.iter().find(|(path, _, _)| *path == uri.path()) else {
        return refuse(StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut response = body.replace(TOKEN_MARK, &app.token).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn socket(
    State(app): State<Arc<App>>,
    Query(access): Query<Access>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(refused) = guard(&app, &headers, &access) {
        return refused.into_response();
    }
    if app.page_count() >= PAGES_MAX {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many pages open: close one",
        )
        .into_response();
    }
    upgrade
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| serve_page(app, socket))
}

/// What a page may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Incoming {
    Input {
        vm: usize,
        text: String,
    },
    End,
    Set {
        knob: String,
        vm: Option<usize>,
        value: u64,
    },
}

/// A page's allowances.
struct Limits {
    input: Bucket,
    controls: Bucket,
}

/// The setting a page's `set` message asks for: `quantum_us` (no VM), `weight` or `cap` (of VM
/// `vm`, by index). Only its shape is checked here; its ranges, the VM and the policy are
/// checked by the session with [`Setting::check`], as for a typed `~weight`.
fn page_setting(knob: &str, vm: Option<usize>, value: u64) -> Result<Setting, String> {
    let value = u32::try_from(value).map_err(|_| format!("{knob}: {value} is too large"))?;
    let which = |vm: Option<usize>| {
        let vm = vm.ok_or_else(|| format!("{knob}: which VM?"))?;
        u16::try_from(vm).map_err(|_| format!("{knob}: there is no VM {vm}"))
    };
    match knob {
        "quantum_us" if vm.is_some() => Err("quantum_us is the run's, not a VM's".to_string()),
        "quantum_us" => Ok(Setting::Quantum { us: value }),
        "weight" => Ok(Setting::Weight {
            vm: which(vm)?,
            weight: value,
        }),
        "cap" => Ok(Setting::Cap {
            vm: which(vm)?,
            cap_pct: value,
        }),
        _ => Err("no such knob (quantum_us, weight, cap)".to_string()),
    }
}

/// Carries out one message from a page; what to tell it back, if anything.
fn incoming(app: &App, text: &str, limits: &mut Limits, now: Instant) -> Option<String> {
    let reply = |text: &str| Some(serde_json::json!([["R", text]]).to_string());
    if !limits.controls.take(1, now) {
        return reply("too many controls: slow down");
    }
    let message: Incoming = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(_) => return reply("not a control this server knows"),
    };
    let control = match message {
        Incoming::Input { vm, text } => {
            if text.len() > INPUT_MAX {
                return reply("input too long (at most 1,024 bytes a message)");
            }
            if !limits.input.take(text.len().max(1) as u32, now) {
                return reply("input rate limited: text dropped");
            }
            Control::Input { vm, text }
        }
        Incoming::End => Control::EndRun,
        Incoming::Set { knob, vm, value } => match page_setting(&knob, vm, value) {
            Ok(setting) => Control::Setting(setting),
            Err(why) => return reply(&why),
        },
    };
    if app.hub.control(control) {
        None
    } else {
        reply("the run is over: nothing to control")
    }
}

/// One page's socket: everything the hub has for it as it comes, and its controls.
async fn serve_page(app: Arc<App>, mut socket: WebSocket) {
    let page = app.next_page.fetch_add(1, Ordering::Relaxed);
    let mut cursor = Cursor::default();
    let mut watch = app.hub.subscribe();
    let now = Instant::now();
    let mut limits = Limits {
        input: Bucket::new(INPUT_BURST, INPUT_RATE, now),
        controls: Bucket::new(CONTROL_BURST, CONTROL_RATE, now),
    };
    app.set_page(page, Some(0));
    'page: loop {
        let version = *watch.borrow_and_update();
        while let Some(message) = app.hub.take(&mut cursor) {
            app.sent.fetch_add(message.len() as u64, Ordering::Relaxed);
            if socket.send(Message::Text(message.into())).await.is_err() {
                break 'page;
            }
        }
        app.set_page(page, Some(version));
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    break;
                }
                // Gather what comes in the next few milliseconds into one message.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = incoming(&app, text.as_str(), &mut limits, Instant::now()) {
                        if socket.send(Message::Text(reply.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    app.set_page(page, None);
}
