//! The web page: `carousel run LAB --web [ADDR]` serves it while the run goes, `carousel view
//! TRACE` over a finished trace. One page, every VM's console (live output, scrollback, input)
//! beside the contention charts, fed by deltas over one WebSocket.
//!
//! What is here: the server's address and its access token ([`parse_addr`], [`token`]),
//! starting and stopping it ([`Server`]); the shared state of server and session ([`hub`]); the
//! HTTP side and its rules ([`server`]); the rate limit on what pages send ([`limit`]). The
//! deltas are `carousel-trace`'s ([`carousel_trace::model::feed`]); the page's assets are in
//! `carousel-trace`'s (`tools/trace/web/`, shared with `carousel report --html`), embedded in the binary.
//!
//! What is not: a second decoder or model. The session hands the server the records it already
//! decoded and the COM1 lines it already split.

pub mod browser;
pub mod hub;
pub mod limit;
pub mod server;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::hub::Hub;
use self::server::App;

/// Where `--web` binds without an address: loopback, a free port.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// `ADDR` of `--web ADDR`: `IP:PORT`, `IP` (a free port), or `PORT` (on loopback).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(DEFAULT_ADDR.ip(), port));
    }
    // `--web` takes an optional value, so a file right after it is read as the address.
    let file = if std::path::Path::new(text).exists() {
        " (that is a file: put --web after it, or write --web=ADDR)"
    } else {
        ""
    };
    Err(format!(
        "--web {text:?}: give IP:PORT, IP or PORT (e.g. 127.0.0.1:8080){file}"
    ))
}

/// What the tool warns when the page is reachable from other machines.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "warning: the web page listens on {addr}, beyond this machine: anyone who can reach \
             it and has the URL's token can type into the VMs and end the run"
        )
    })
}

/// How long the server waits for connections to close once asked to stop.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// A fresh access token: 128 random bits from the kernel, in hex.
pub fn token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The server, running on a thread of its own until dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves the pages of `hub`.
    pub fn start(addr: SocketAddr, hub: Arc<Hub>) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App::new(hub, token()?, server::hosts(addr)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let router = server::router(app.clone());
        let thread = std::thread::Builder::new()
            .name("carousel-web".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let mut graceful = stopped.clone();
                    let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                        let _ = graceful.wait_for(|stop| *stop).await;
                    });
                    // A browser may hold a connection open: once asked to stop, wait this long
                    // at most.
                    let mut hard = stopped;
                    tokio::select! {
                        _ = serve => {}
                        _ = async move {
                            let _ = hard.wait_for(|stop| *stop).await;
                            tokio::time::sleep(STOP_GRACE).await;
                        } => {}
                    }
                });
                // Open sockets end with the runtime.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Server {
            addr,
            app,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, token included.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            SocketAddr::new(DEFAULT_ADDR.ip(), self.addr.port())
        } else {
            self.addr
        };
        format!("http://{host}/?t={}", self.app.token)
    }

    /// The access token.
    pub fn token(&self) -> &str {
        &self.app.token
    }

    /// Waits until every connected page has everything published so far, at most `limit`.
    pub fn linger(&self, limit: Duration) {
        let version = *self.app.hub.subscribe().borrow();
        let until = Instant::now() + limit;
        while !self.app.pages_have(version) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pages connected now.
    pub fn page_count(&self) -> usize {
        self.app.page_count()
    }

    /// Bytes of messages sent to pages so far.
    pub fn bytes_sent(&self) -> u64 {
        self.app.bytes_sent()
    }

    /// True when every connected page has everything published so far.
    pub fn pages_caught_up(&self) -> bool {
        let version = *self.app.hub.subscribe().borrow();
        self.app.pages_have(version)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_tokens() {
        assert_eq!(parse_addr("127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(parse_addr("0.0.0.0").unwrap(), "0.0.0.0:0".parse().unwrap());
        assert_eq!(
            parse_addr("9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert!(parse_addr("example.com").is_err());
        // A lab or trace taken for the address says how to put it.
        let file = tempfile::NamedTempFile::new().unwrap();
        let error = parse_addr(file.path().to_str().unwrap()).unwrap_err();
        assert!(error.contains("put --web after it"), "{error}");
        assert!(!parse_addr("example.com")
            .unwrap_err()
            .contains("put --web after it"));
        assert!(exposure_warning(DEFAULT_ADDR).is_none());
        assert!(exposure_warning("0.0.0.0:1".parse().unwrap())
            .unwrap()
            .contains("anyone"));
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
