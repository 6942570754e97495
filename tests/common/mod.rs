//! The integration-test harness: the real croupier binary, real providers, raw HTTP/1.1.
//!
//! - [`Croupier`] runs `target/.../croupier` on a free loopback port and talks to its control
//!   plane; it kills the process when dropped and prints its log if the test failed.
//! - [`Conn`] and [`request`] are a small blocking client that shows exactly what came back.
//! - [`Provider`] is a provider server that records what croupier forwarded to it.
//!
//! Every socket has a timeout and every wait a bound, so a broken croupier fails a test rather
//! than hanging the suite.

#![allow(
    dead_code,
    unused_imports,
    unused_macros,
    reason = "each test binary uses a different part of the harness"
)]

/// Turns each `fn case(driver: &str)` into a module of two tests, one per
/// io driver: every test of I/O runs on io_uring and on epoll.
macro_rules! on_both_drivers {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn io_uring() {
                super::$case("io-uring");
            }

            #[test]
            fn legacy() {
                super::$case("legacy");
            }
        }
    )*};
}

mod client;
pub mod faulty;
mod provider;
pub mod recording;
mod server;
mod wire;

pub use client::{Conn, Response, get, request, request_bytes, try_request};
pub use provider::{Behaviour, Provider, Recorded};

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long croupier may take to answer its health check after being spawned.
pub const START_TIMEOUT_MS: u64 = 10_000;

/// Pause between two polls of something the test waits for.
pub const POLL_INTERVAL_MS: u64 = 20;

/// Read timeout of one health-check attempt during start-up.
const HEALTH_READ_TIMEOUT_MS: u64 = 1_000;

/// Distinguishes the log files of croupiers started by one test process.
static NEXT_LOG_ID: AtomicUsize = AtomicUsize::new(0);

/// A loopback port that was free a moment ago: bound, read and released.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral address").port()
}

fn temp_path(what: &str) -> PathBuf {
    let id = NEXT_LOG_ID.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("croupier-test-{}-{id}.{what}", std::process::id()))
}

/// The croupier binary with no `CROUPIER_*` variables inherited, so only the arguments count.
fn croupier_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_croupier"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CROUPIER_") {
            command.env_remove(name);
        }
    }
    // Plain log lines, so a failing test's printed log reads without escape codes.
    command.env("NO_COLOR", "1");
    command.stdin(Stdio::null());
    command
}

/// A running croupier process.
pub struct Croupier {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl Croupier {
    /// Starts croupier on a free loopback port with 2 cores and `driver` (`io-uring` or
    /// `legacy`), then waits until `GET /_croupier/health` answers 200.
    pub fn start(driver: &str, extra_args: &[&str]) -> Croupier {
        let port = free_port();
        let log_path = temp_path("stderr");
        let log = File::create(&log_path).expect("create croupier's log file");
        let child = croupier_command()
            .args(["--host", "127.0.0.1", "--cores", "2", "--driver", driver])
            .args(extra_args)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn croupier");
        let mut croupier =
            Croupier { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log_path };
        croupier.wait_healthy();
        croupier
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        let mut last_error = String::from("no attempt made");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("croupier exited during start-up with {status}; log:\n{}", self.logs());
            }
            let attempt = Conn::try_open(self.addr, Duration::from_millis(HEALTH_READ_TIMEOUT_MS))
                .and_then(|mut conn| conn.try_roundtrip("GET", "/_croupier/health", &[], b""));
            match attempt {
                Ok(response) if response.status == 200 => return,
                Ok(response) => last_error = format!("health answered {}", response.summary()),
                Err(e) => last_error = e.to_string(),
            }
            thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
        panic!(
            "croupier not healthy within {START_TIMEOUT_MS} ms (last: {last_error}); log:\n{}",
            self.logs()
        );
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in pid_t")
    }

    /// Announces provider 127.0.0.1:`port` for `topic` with a lease of `ttl_s` seconds.
    pub fn announce(&self, topic: &str, port: u16, ttl_s: u64) -> (u16, Value) {
        let body = json!({"topic": topic, "host": "127.0.0.1", "port": port, "ttl": ttl_s});
        self.announce_raw(&body.to_string())
    }

    /// Posts `body` as it is to `/_croupier/announce`.
    pub fn announce_raw(&self, body: &str) -> (u16, Value) {
        self.post_control("/_croupier/announce", body)
    }

    /// Withdraws provider 127.0.0.1:`port` from `topic`.
    pub fn leave(&self, topic: &str, port: u16) -> (u16, Value) {
        let body = json!({"topic": topic, "host": "127.0.0.1", "port": port});
        self.post_control("/_croupier/leave", &body.to_string())
    }

    fn post_control(&self, path: &str, body: &str) -> (u16, Value) {
        let headers = [("content-type", "application/json")];
        let response = request(self.addr, "POST", path, &headers, body.as_bytes());
        (response.status, response.json())
    }

    /// The `GET /_croupier/providers` document; anything but a 200 fails the test.
    pub fn providers(&self) -> Value {
        let response = request(self.addr, "GET", "/_croupier/providers", &[], b"");
        assert_eq!(response.status, 200, "providers: {}", response.summary());
        response.json()
    }

    /// Everything croupier wrote to stderr so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Sends signal `sig` (`libc::SIGTERM`, ...) to croupier.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our
        // own child, not yet reaped (reaping happens only in `wait_exit` and `drop`).
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}): {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Waits up to `timeout` for croupier to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }
}

impl Drop for Croupier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- croupier stderr ({}) ----\n{}", self.addr, self.logs());
        }
        let _ = fs::remove_file(&self.log_path);
    }
}

/// How a croupier run with no server work ended (for command-line tests).
#[derive(Debug)]
pub struct Finished {
    /// `None` if it had not exited within the timeout (it was killed then).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs croupier with exactly `args` and waits up to `timeout` for it to exit.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Finished {
    let out_path = temp_path("stdout");
    let err_path = temp_path("stderr");
    let mut child = croupier_command()
        .args(args)
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("spawn croupier");

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    };

    let read = |path: &PathBuf| fs::read_to_string(path).unwrap_or_default();
    let finished = Finished { status, stdout: read(&out_path), stderr: read(&err_path) };
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    finished
}

/// FNV-1a, 64 bits: the checksum providers put in `x-body-sum`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Byte `offset` of the test pattern: a multiplicative hash of the offset, so a repeated,
/// dropped or shifted run of bytes anywhere shows up as a mismatch.
pub fn pattern_byte(offset: usize) -> u8 {
    ((offset as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// The first `len` bytes of the test pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// The `provider` addresses listed for `topic` in a `/_croupier/providers` document.
pub fn providers_of(document: &Value, topic: &str) -> Vec<String> {
    document["topics"][topic]
        .as_array()
        .map(|list| {
            list.iter().filter_map(|p| p["provider"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default()
}

/// Every (topic, provider) pair of a `/_croupier/providers` document, without the fields that
/// change by themselves (lease left, request counts).
pub fn provider_pairs(document: &Value) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    if let Some(topics) = document["topics"].as_object() {
        for (topic, list) in topics {
            for provider in list.as_array().into_iter().flatten() {
                let address = provider["provider"].as_str().unwrap_or("?").to_string();
                pairs.insert((topic.clone(), address));
            }
        }
    }
    pairs
}

/// `body` in the chunked coding, in chunks whose sizes vary from 1 byte to 64 KiB so chunk
/// boundaries land at odd places, followed by the last chunk and no trailers.
pub fn chunked_encoding(body: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(body.len() + body.len() / 1024 + 16);
    let mut offset = 0;
    let mut index: usize = 0;
    while offset < body.len() {
        let size = (1 + index.wrapping_mul(104_729) % 65_536).min(body.len() - offset);
        encoded.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        encoded.extend_from_slice(&body[offset..offset + size]);
        encoded.extend_from_slice(b"\r\n");
        offset += size;
        index += 1;
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

/// Sends `bytes` (a whole request) from a second thread while this one reads the response,
/// so a croupier that answers before reading the whole body cannot deadlock the test. Returns
/// the response and how the write ended.
pub fn upload(addr: SocketAddr, bytes: Vec<u8>) -> (Response, std::io::Result<()>) {
    let mut conn = Conn::open(addr);
    let mut writer = conn.writer();
    let write = thread::spawn(move || writer.write_all(&bytes));
    let response = conn.read_response();
    let written = write.join().expect("upload writer panicked");
    (response, written)
}

/// The first offset where `got` and `want` differ (or where the shorter ends), for a readable
/// message about 10 MiB bodies.
pub fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    let differs = got.iter().zip(want).position(|(a, b)| a != b);
    differs.or_else(|| (got.len() != want.len()).then(|| got.len().min(want.len())))
}

/// `127.0.0.1:<port>`, the way croupier names a provider.
pub fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Reads a head byte by byte, so not one byte after it is taken from the
/// socket (the tests that use it look at what follows the head), up to
/// 16 KiB.
pub fn read_head(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
