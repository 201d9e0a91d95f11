//! The hypervisor's COM1 as a two-way TCP connection: the emulator serves the serial port on a
//! local port (Bochs `mode=socket-server`, QEMU `-chardev socket,server=on,wait=on`), the tool
//! connects, copies everything it receives into the run directory's `com1.txt` (which the run
//! loop reads, as it would a file the emulator wrote), and writes console input back.
//!
//! Both emulators wait for the connection before the guest runs, so nothing is lost. Bochs
//! cannot reuse a port (no `SO_REUSEADDR`, BOCHS.md), so every run asks the host for a free one
//! ([`free_port`]); when the emulator still finds it taken (another run got it in between), it
//! exits at once saying so, and [`connect`] reports [`ConnectError::PortTaken`] for the caller to
//! retry with another port. So that the tool never talks to another run's emulator that holds
//! the port, it connects only once its own emulator's process listens there (Linux `/proc`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::process::Emulator;

/// How long the emulator may take to open its COM1 port.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// Pause between connection attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// How long the reader waits for bytes before it looks whether it should stop.
const READ_POLL: Duration = Duration::from_millis(100);
/// How many ports a run tries before it gives up.
pub const PORT_ATTEMPTS: usize = 4;
/// What the emulators say when the port is taken: Bochs 2.7 ("com1: bind() or listen() failed
/// (host:localhost, port:N)") and QEMU ("Failed to bind socket: Address already in use").
const PORT_TAKEN_MESSAGES: &[&str] = &["bind() or listen() failed", "Failed to bind socket"];

/// A port on 127.0.0.1 that nothing listens on now: bound with port 0, read back, released.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Why the tool has no COM1 connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The emulator exited because the port was taken: retry with another.
    #[error("the emulator could not listen on port {port} (taken)")]
    PortTaken { port: u16 },
    /// The emulator exited before it accepted the connection (for another reason: its output
    /// says which).
    #[error("the emulator exited before its COM1 port {port} accepted a connection")]
    EmulatorExited { port: u16 },
    #[error("the emulator did not open its COM1 port {port} within {} s", CONNECT_LIMIT.as_secs())]
    TimedOut { port: u16 },
    #[error("interrupted (Ctrl-C) while connecting to COM1")]
    Interrupted,
    #[error("cannot create {path}: {source}")]
    File { path: PathBuf, source: io::Error },
}

/// A live COM1 connection: a thread copies what arrives into `com1.txt`; [`Com1::writer`] sends.
#[derive(Debug)]
pub struct Com1 {
    writer: TcpStream,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

/// Connects to the emulator's COM1 on `port`, retrying while the emulator starts; what arrives
/// goes into `file`. `logs` are the emulator's output files, searched for a port conflict when
/// it exits first.
pub fn connect(
    port: u16,
    file: &Path,
    emulator: &mut Emulator,
    logs: &[PathBuf],
    interrupted: &AtomicBool,
) -> Result<Com1, ConnectError> {
    connect_checked(port, file, emulator, logs, interrupted, true)
}

/// [`connect`]; with `check_owner` false it connects to whoever listens (for tests whose
/// "emulator" cannot listen).
fn connect_checked(
    port: u16,
    file: &Path,
    emulator: &mut Emulator,
    logs: &[PathBuf],
    interrupted: &AtomicBool,
    check_owner: bool,
) -> Result<Com1, ConnectError> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    let stream = loop {
        if emulator.try_exited().is_some() {
            return Err(if port_taken(logs) {
                ConnectError::PortTaken { port }
            } else {
                ConnectError::EmulatorExited { port }
            });
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(ConnectError::Interrupted);
        }
        // Where /proc cannot tell, connecting is the only test.
        let ours = !check_owner || listens(emulator.id(), port).unwrap_or(true);
        if ours {
            if let Ok(stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                break stream;
            }
        }
        if start.elapsed() >= CONNECT_LIMIT {
            return Err(ConnectError::TimedOut { port });
        }
        std::thread::sleep(CONNECT_RETRY);
    };
    let output = File::create(file).map_err(|source| ConnectError::File {
        path: file.to_path_buf(),
        source,
    })?;
    // Console input is a few bytes at a time; send them at once.
    let _ = stream.set_nodelay(true);
    let reader_stream = stream.try_clone().map_err(|source| ConnectError::File {
        path: file.to_path_buf(),
        source,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("com1".to_string())
            .spawn(move || copy_until_stopped(reader_stream, output, &stop))
            .map_err(|source| ConnectError::File {
                path: file.to_path_buf(),
                source,
            })?
    };
    Ok(Com1 {
        writer: stream,
        stop,
        reader: Some(reader),
    })
}

/// Whether process `pid` has a TCP socket listening on 127.0.0.1:`port`, from `/proc/net/tcp`
/// and the process's file descriptors; None when `/proc` cannot say.
pub fn listens(pid: u32, port: u16) -> Option<bool> {
    /// `st` of a listening socket in /proc/net/tcp.
    const TCP_LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // local_address is the IPv4 address as a native-endian hex word, then the port.
    let local = format!(
        "{:08X}:{port:04X}",
        u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets())
    );
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening =
                fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&TCP_LISTEN);
            listening
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    if sockets.is_empty() {
        return Some(false);
    }
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(descriptors.flatten().any(|descriptor| {
        std::fs::read_link(descriptor.path()).is_ok_and(|target| {
            sockets
                .iter()
                .any(|socket| target.as_os_str() == socket.as_str())
        })
    }))
}

/// Whether the emulator's output says it could not listen on its port.
fn port_taken(logs: &[PathBuf]) -> bool {
    logs.iter().any(|log| {
        std::fs::read(log).is_ok_and(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            PORT_TAKEN_MESSAGES
                .iter()
                .any(|message| text.contains(message))
        })
    })
}

/// The reader thread: socket to file until the emulator closes the connection, or the tool
/// asks it to stop and nothing more arrives.
fn copy_until_stopped(mut stream: TcpStream, mut output: File, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(READ_POLL));
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(count) => {
                // The run loop reads the file; a write error leaves it short, nothing worse.
                let _ = output.write_all(&buffer[..count]);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Com1 {
    /// Where console input goes.
    pub fn writer(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    /// Waits until everything the emulator sent is in the file. Call it after the emulator has
    /// exited or been killed: the reader stops at the end of the connection, or once nothing
    /// has arrived for a moment.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Com1 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn free_ports_are_free() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn listening_sockets_are_found_by_owner() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        assert_eq!(listens(me, port), Some(true));
        // A connected socket on that port is no listener; another process is not the owner.
        let _client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut other =
            Emulator::spawn("sleep", &["30".to_string()], &[], &dir.path().join("out")).unwrap();
        assert_eq!(listens(other.id(), port), Some(false));
        other.kill();
        drop(listener);
        assert_eq!(listens(me, port), Some(false));
    }

    #[test]
    fn port_conflicts_are_recognised_in_either_emulator_s_words() {
        let dir = tempfile::tempdir().unwrap();
        let bochs = dir.path().join("bochs.out");
        let qemu = dir.path().join("qemu.out");
        std::fs::write(
            &bochs,
            "[SER   ] com1: bind() or listen() failed (host:localhost, port:5)",
        )
        .unwrap();
        std::fs::write(
            &qemu,
            "qemu-system-x86_64: -chardev socket,...: Failed to bind socket: Address already in use",
        )
        .unwrap();
        assert!(port_taken(std::slice::from_ref(&bochs)));
        assert!(port_taken(&[dir.path().join("missing"), qemu]));
        std::fs::write(&bochs, "something else").unwrap();
        assert!(!port_taken(&[bochs]));
    }

    /// A fake emulator: a listener that accepts, sends, and reads what the tool writes.
    #[test]
    fn bytes_flow_both_ways_and_all_received_bytes_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket.write_all(b"[carousel] hello\n[a] $ ").unwrap();
            let mut got = [0u8; 3];
            socket.read_exact(&mut got).unwrap();
            socket.write_all(b"\n[a] ls\n").unwrap();
            got
        });
        // `sleep` stands in for the emulator process that stays alive.
        let mut emulator =
            Emulator::spawn("sleep", &["30".to_string()], &[], &dir.path().join("out")).unwrap();
        let file = dir.path().join("com1.txt");
        let mut com1 = connect_checked(
            port,
            &file,
            &mut emulator,
            &[],
            &AtomicBool::new(false),
            false,
        )
        .unwrap();
        com1.writer().write_all(b"ls\n").unwrap();
        assert_eq!(&server.join().unwrap(), b"ls\n");
        emulator.kill();
        com1.finish();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"[carousel] hello\n[a] $ \n[a] ls\n"
        );
    }

    #[test]
    fn an_emulator_that_exits_first_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let log = dir.path().join("out");
        let mut emulator = Emulator::spawn(
            "sh",
            &[
                "-c".to_string(),
                "echo 'com1: bind() or listen() failed'".to_string(),
            ],
            &[],
            &log,
        )
        .unwrap();
        let error = connect(
            port,
            &dir.path().join("com1.txt"),
            &mut emulator,
            &[log],
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(matches!(error, ConnectError::PortTaken { .. }), "{error}");
    }
}
