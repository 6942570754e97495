//! `example-provider`: the demo's provider, a small HTTP/1.1 server that announces itself to
//! croupier.
//!
//! Every request gets `200` and a one-line text body that names this provider, such as
//! `hello from provider 127.0.0.1:40123 (topic demo)`, so a client going through croupier can see
//! which provider served it and how requests spread. Every `--every-ms` the provider renews its
//! lease with `POST /_croupier/announce` on each croupier it was given; on SIGINT or SIGTERM it
//! sends `POST /_croupier/leave` to each and exits 0.
//!
//! It is plain std on purpose: one thread per client connection (at most `CONNECTIONS_MAX`),
//! blocking sockets with timeouts, and a hand-written request reader that frames bodies by
//! Content-Length or the chunked coding (RFC 9112 §6 and §7.1), counts them and throws them away.
//! It is a demo and a test helper, not a model for croupier's own request path.

use std::io::{self, IsTerminal, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use tracing::{debug, error, info, warn};

/// Client connections served at once. Each holds a thread; wrk runs with a few hundred
/// connections at most here, and past this a client gets a 503 rather than an unbounded thread.
const CONNECTIONS_MAX: usize = 512;
/// Stack of a connection thread: the request buffer lives on the heap, so little is needed.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;
/// Longest silence from a client, between requests or inside one, before the connection closes.
/// Long enough that croupier's keep-alive pool is not churned by an idle demo.
const CLIENT_READ_TIMEOUT_MS: u64 = 60_000;
/// Longest a write to a client may block (a client that stopped reading).
const CLIENT_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Request line plus header fields, and also the size of a connection's read buffer.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Header field lines in one request head.
const HEADER_FIELDS_MAX: usize = 100;
/// A chunk-size line or a trailer line, extensions included.
const CHUNK_LINE_BYTES_MAX: usize = 4 * 1024;
/// Hex digits in a chunk size: 15 of them stay below 2^60, so the sum cannot overflow a u64.
const CHUNK_SIZE_DIGITS_MAX: usize = 15;
/// Decimal digits in a Content-Length: 18 of them always fit a u64.
const CONTENT_LENGTH_DIGITS_MAX: usize = 18;
/// After an error reply, how long to keep reading what the client still sends, so that closing
/// with unread bytes does not reset the connection and destroy the reply before it is read.
const LINGER_MS: u64 = 500;
/// Bytes drained at most during that linger.
const LINGER_BYTES_MAX: usize = 64 * 1024;
/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF_MS: u64 = 100;
/// Connecting to a croupier for an announce or a leave.
const CONTROL_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Each read or write of an announce or a leave; a croupier answers only after every core has
/// applied the change, which is quick but not instant on a busy machine.
const CONTROL_IO_TIMEOUT_MS: u64 = 2_000;
/// Bytes of a croupier's reply kept (status line, headers, and the JSON for the logs).
const CONTROL_REPLY_BYTES_MAX: usize = 4 * 1024;
/// How often the announce loop looks at the stop flag while it waits.
const STOP_POLL_MS: u64 = 50;

/// Set by the SIGINT/SIGTERM handler, polled by the announce loop.
static STOP: AtomicBool = AtomicBool::new(false);

/// A tiny HTTP/1.1 server that announces itself to croupier and names itself in every answer.
#[derive(Parser, Debug)]
#[command(name = "example-provider", version)]
struct Args {
    /// Address to listen on (and to announce, unless it is 0.0.0.0 or ::).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on; 0 picks a free one. The bound address is printed on stdout.
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Topic this provider serves.
    #[arg(long, default_value = "demo", value_parser = parse_topic)]
    topic: String,

    /// Croupier to announce to, as http://HOST:PORT; repeat the option for several.
    #[arg(
        long = "croupier",
        value_name = "URL",
        default_value = "http://127.0.0.1:8000",
        value_parser = parse_croupier_url
    )]
    croupiers: Vec<Croupier>,

    /// Milliseconds between two announces.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    every_ms: u64,

    /// Lease asked for in each announce, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    ttl_s: u64,

    /// Label shown in the answers, besides the address.
    #[arg(long)]
    name: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: the demo script sends these logs to a file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Starts serving, then announces until a stop signal, then leaves.
fn run(args: &Args) -> Result<(), String> {
    install_stop_handlers().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = TcpListener::bind((args.host, args.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot read bound address: {e}"))?;

    // The demo script and tests read this line to learn the ephemeral port.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;

    let greeting = match &args.name {
        Some(name) => format!("hello from provider {name} at {addr} (topic {})", args.topic),
        None => format!("hello from provider {addr} (topic {})", args.topic),
    };
    let provider = Arc::new(Provider { greeting, active: AtomicUsize::new(0) });
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(&listener, &provider))
        .map_err(|e| format!("cannot start the accept thread: {e}"))?;
    info!(%addr, topic = %args.topic, croupiers = args.croupiers.len(), "provider started");

    if args.every_ms >= args.ttl_s.saturating_mul(1000) {
        warn!(
            every_ms = args.every_ms,
            ttl_s = args.ttl_s,
            "announces are not more frequent than the lease; it may lapse between them"
        );
    }
    announce_until_stopped(args, addr);
    for croupier in &args.croupiers {
        leave(croupier, &args.topic, addr);
    }
    info!(%addr, "provider stopped");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Signals

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // Only an atomic store: locks, allocation or I/O are not async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() -> io::Result<()> {
    let handler: extern "C" fn(libc::c_int) = on_stop_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` is a plain C struct for which all-zero bytes is a valid value
        // (SIG_DFL, no flags, an empty mask); the fields that matter are set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as libc::sighandler_t;
        // Restarted system calls keep blocking reads in connection threads from failing with
        // EINTR when the signal lands on them.
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is initialised and outlives the call, a null old-action pointer is
        // allowed, and the handler does nothing but one atomic store.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Serving clients

/// What every connection thread shares.
struct Provider {
    /// The answer's text, without the newline.
    greeting: String,
    /// Client connections being served now.
    active: AtomicUsize,
}

/// Gives back a connection slot when a connection thread ends, however it ends.
struct Slot(Arc<Provider>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, provider: &Arc<Provider>) {
    for accepted in listener.incoming() {
        match accepted {
            Ok(stream) => admit(stream, provider),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                thread::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS));
            }
        }
    }
}

/// Gives a new client a thread of its own, or a 503 when all slots are taken.
fn admit(stream: TcpStream, provider: &Arc<Provider>) {
    if provider.active.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
        provider.active.fetch_sub(1, Ordering::SeqCst);
        debug!(connections_max = CONNECTIONS_MAX, "refusing a client: all slots taken");
        let _ = stream.set_write_timeout(Some(Duration::from_millis(CLIENT_WRITE_TIMEOUT_MS)));
        let _ = write_error(&stream, 503, "too many connections");
        return;
    }
    let slot = Slot(Arc::clone(provider));
    let spawned = thread::Builder::new()
        .name("client".into())
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || serve_client(stream, &slot));
    if let Err(e) = spawned {
        // The closure, and with it the slot and the stream, was dropped: the client sees a close.
        warn!(error = %e, "cannot start a connection thread");
    }
}

/// Why a request could not be answered with a 200.
#[derive(Debug)]
enum RequestError {
    /// The client broke HTTP/1.1 syntax or framing: 400, then close.
    Malformed(&'static str),
    /// The head outgrew `HEAD_BYTES_MAX`: 431, then close.
    HeadTooLarge,
    /// The client went away or fell silent mid-request: nothing can be answered.
    Gone,
}

impl From<io::Error> for RequestError {
    fn from(_: io::Error) -> Self {
        RequestError::Gone
    }
}

/// Whether the connection stays open after an answer.
#[derive(Debug, PartialEq, Eq)]
enum Persistence {
    KeepAlive,
    Close,
}

fn serve_client(stream: TcpStream, slot: &Slot) {
    let configured = stream
        .set_read_timeout(Some(Duration::from_millis(CLIENT_READ_TIMEOUT_MS)))
        .and_then(|()| {
            stream.set_write_timeout(Some(Duration::from_millis(CLIENT_WRITE_TIMEOUT_MS)))
        })
        .and_then(|()| stream.set_nodelay(true));
    if let Err(e) = configured {
        debug!(error = %e, "cannot configure a client socket");
        return;
    }
    let mut reader = Reader::new(stream);

    loop {
        match serve_request(&mut reader, &slot.0.greeting) {
            Ok(Persistence::KeepAlive) => {}
            Ok(Persistence::Close) => break,
            Err(RequestError::Gone) => return,
            Err(RequestError::Malformed(reason)) => {
                debug!(reason, "client sent a malformed request");
                let _ = write_error(&reader.stream, 400, reason);
                break;
            }
            Err(RequestError::HeadTooLarge) => {
                debug!(head_bytes_max = HEAD_BYTES_MAX, "client sent an over-large head");
                let _ = write_error(&reader.stream, 431, "request head too large");
                break;
            }
        }
    }
    linger_close(&mut reader.stream);
}

/// Reads one request, discards its body and answers it.
fn serve_request(reader: &mut Reader, greeting: &str) -> Result<Persistence, RequestError> {
    let Some(head_len) = reader.read_head()? else {
        return Ok(Persistence::Close);
    };
    let head = parse_head(&reader.buffered()[..head_len])?;
    reader.consume(head_len);

    // RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` may wait for this before
    // sending the body; curl does so for large uploads.
    if head.expect_continue && head.framing != Framing::None && head.version_minor == 1 {
        (&reader.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body_bytes = match head.framing {
        Framing::None => 0,
        Framing::Length(length) => {
            reader.skip(length)?;
            length
        }
        Framing::Chunked => skip_chunked(reader)?,
    };

    let text = if body_bytes == 0 {
        format!("{greeting}\n")
    } else {
        format!("{greeting}, read {body_bytes} body bytes\n")
    };
    let connection = match (&head.persistence, head.version_minor) {
        (Persistence::Close, _) => "Connection: close\r\n",
        (Persistence::KeepAlive, 0) => "Connection: keep-alive\r\n",
        (Persistence::KeepAlive, _) => "",
    };
    // TODO: no Date header (RFC 9110 §6.6.1); std cannot format an HTTP-date and no client of
    // the demo needs one.
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         {connection}\r\n",
        text.len()
    )
    .into_bytes();
    if !head.is_head_method {
        answer.extend_from_slice(text.as_bytes());
    }
    (&reader.stream).write_all(&answer)?;
    Ok(head.persistence)
}

/// Answers with a short text body and `Connection: close`; the caller closes afterwards.
fn write_error(mut stream: &TcpStream, status: u16, reason: &str) -> io::Result<()> {
    let phrase = match status {
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let text = format!("{reason}\n");
    let answer = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(answer.as_bytes())
}

/// Closes a client connection so the last answer survives: send FIN first, then drain what the
/// client still sends for a moment, since closing with unread bytes would reset the connection.
fn linger_close(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(LINGER_MS)));
    let deadline = Instant::now() + Duration::from_millis(LINGER_MS);
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES_MAX && Instant::now() < deadline {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading requests

/// A client connection's receive side: a fixed buffer of `HEAD_BYTES_MAX` over the socket.
struct Reader {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Reader {
    fn new(stream: TcpStream) -> Self {
        Reader { stream, buf: vec![0; HEAD_BYTES_MAX].into_boxed_slice(), start: 0, end: 0 }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start, "consumed more than was buffered");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more from the socket; `Ok(0)` means the client closed. Callers never let the
    /// unread bytes fill the whole buffer, so there is always room after compacting.
    fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        debug_assert!(self.end < self.buf.len(), "fill called with a full buffer");
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Fills until at least `n` bytes are buffered (`n` below the buffer size).
    fn fill_to(&mut self, n: usize) -> Result<(), RequestError> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Err(RequestError::Gone);
            }
        }
        Ok(())
    }

    /// Buffers a whole request head and returns its length, the blank line included, or `None`
    /// when the client closed cleanly between requests.
    fn read_head(&mut self) -> Result<Option<usize>, RequestError> {
        loop {
            // RFC 9112 §2.2: a server should ignore at least one empty line before the
            // request line (some clients send one after a POST body).
            while self.buffered().starts_with(b"\r\n") {
                self.consume(2);
            }
            if let Some(at) = find(self.buffered(), b"\r\n\r\n") {
                return Ok(Some(at + 4));
            }
            // Refused here rather than in `parse_head`: a head of bare LFs never shows the
            // CRLF CRLF that ends it, and the client would wait for the read timeout.
            if has_bare_lf(self.buffered()) {
                return Err(RequestError::Malformed("line ends in a bare LF"));
            }
            if self.buffered().len() >= HEAD_BYTES_MAX {
                return Err(RequestError::HeadTooLarge);
            }
            match self.fill() {
                Ok(0) if self.buffered().is_empty() => return Ok(None),
                Ok(0) => return Err(RequestError::Gone),
                Ok(_) => {}
                // A timeout or a reset between requests is an ordinary end of a connection.
                Err(_) => return Err(RequestError::Gone),
            }
        }
    }

    /// Buffers one CRLF-terminated line and returns its length with the CRLF.
    fn read_line(&mut self, limit: usize) -> Result<usize, RequestError> {
        debug_assert!(limit < HEAD_BYTES_MAX, "a line must fit the buffer");
        loop {
            if let Some(lf) = self.buffered().iter().position(|&b| b == b'\n') {
                // RFC 9112 §2.2 allows a recipient to take a bare LF as a line end; inside body
                // framing that leniency is how request smuggling starts, so it is refused.
                if lf == 0 || self.buffered()[lf - 1] != b'\r' {
                    return Err(RequestError::Malformed("line ends in a bare LF"));
                }
                if lf >= limit {
                    return Err(RequestError::Malformed("chunk line too long"));
                }
                return Ok(lf + 1);
            }
            if self.buffered().len() >= limit {
                return Err(RequestError::Malformed("chunk line too long"));
            }
            if self.fill()? == 0 {
                return Err(RequestError::Gone);
            }
        }
    }

    /// Reads and drops `n` body bytes.
    fn skip(&mut self, mut n: u64) -> Result<(), RequestError> {
        loop {
            let buffered = self.buffered().len();
            let take = usize::try_from(n).map_or(buffered, |n| n.min(buffered));
            self.consume(take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            if self.fill()? == 0 {
                return Err(RequestError::Gone);
            }
        }
    }
}

fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'\n')
        || bytes.windows(2).any(|pair| pair[1] == b'\n' && pair[0] != b'\r')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What the provider needs from a request head.
#[derive(Debug)]
struct Head {
    is_head_method: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version_minor: u8,
    persistence: Persistence,
    framing: Framing,
    expect_continue: bool,
}

/// Parses a head that ends in CRLF CRLF: the request line, then the field lines.
fn parse_head(head: &[u8]) -> Result<Head, RequestError> {
    debug_assert!(head.ends_with(b"\r\n\r\n"));
    // Without the blank line, every line ends in LF, so each piece keeps its own line end.
    let mut lines = head[..head.len() - 2].split_inclusive(|&b| b == b'\n');
    let request_line = strip_crlf(lines.next().unwrap_or_default())?;
    let (is_head_method, version_minor) = parse_request_line(request_line)?;

    let mut fields = Fields::default();
    for (count, line) in lines.enumerate() {
        if count >= HEADER_FIELDS_MAX {
            return Err(RequestError::Malformed("too many header fields"));
        }
        fields.add(strip_crlf(line)?)?;
    }

    let framing = fields.framing(version_minor)?;
    let persistence = match (version_minor, fields.close, fields.keep_alive) {
        (_, true, _) | (0, false, false) => Persistence::Close,
        _ => Persistence::KeepAlive,
    };
    Ok(Head {
        is_head_method,
        version_minor,
        persistence,
        framing,
        expect_continue: fields.expect_continue,
    })
}

/// Takes the CRLF off a head line. RFC 9112 §2.2 lets a recipient accept a bare LF, but a
/// proxy in front may frame such a head differently, so it is refused, as is a bare CR.
fn strip_crlf(line: &[u8]) -> Result<&[u8], RequestError> {
    let line =
        line.strip_suffix(b"\r\n").ok_or(RequestError::Malformed("line ends in a bare LF"))?;
    if line.contains(&b'\r') {
        return Err(RequestError::Malformed("bare CR in the head"));
    }
    Ok(line)
}

/// RFC 9112 §3: `method SP request-target SP HTTP-version`, single spaces, nothing else.
fn parse_request_line(line: &[u8]) -> Result<(bool, u8), RequestError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line is not method, target and version"));
    };
    if !is_token(method) {
        return Err(RequestError::Malformed("method is not a token"));
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(RequestError::Malformed("request target is empty or not visible ASCII"));
    }
    let version_minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(RequestError::Malformed("HTTP version is not 1.0 or 1.1")),
    };
    Ok((method == b"HEAD", version_minor))
}

/// What the header fields say about framing and persistence.
#[derive(Debug, Default)]
struct Fields {
    content_length: Option<u64>,
    /// Transfer-Encoding was present at all.
    transfer_encoding: bool,
    /// How often `chunked` was listed, and whether it was the last coding.
    chunked_count: usize,
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Fields {
    /// RFC 9112 §5: `field-name ":" OWS field-value OWS`, no space before the colon, no
    /// line folding.
    fn add(&mut self, line: &[u8]) -> Result<(), RequestError> {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(RequestError::Malformed("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(RequestError::Malformed("header line without a colon"))?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if !is_token(name) {
            return Err(RequestError::Malformed("header name is not a token"));
        }
        if !value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
            return Err(RequestError::Malformed("control character in a header value"));
        }

        if name.eq_ignore_ascii_case(b"content-length") {
            self.add_content_length(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            // RFC 9110 §5.6.1: empty list elements are to be ignored.
            for coding in list_elements(value) {
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                self.chunked_count += usize::from(self.chunked_last);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_elements(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// RFC 9112 §6.3: a Content-Length must be digits, and repeated values (in one field or
    /// several) must agree, or the framing is unknowable.
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), RequestError> {
        for element in value.split(|&b| b == b',').map(trim_ows) {
            let digits_ok = !element.is_empty()
                && element.len() <= CONTENT_LENGTH_DIGITS_MAX
                && element.iter().all(u8::is_ascii_digit);
            if !digits_ok {
                return Err(RequestError::Malformed("invalid Content-Length"));
            }
            let length = element.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(RequestError::Malformed("conflicting Content-Length values"));
            }
            self.content_length = Some(length);
        }
        Ok(())
    }

    /// Decides the body framing, refusing every ambiguous combination (RFC 9112 §6.1, §6.3).
    fn framing(&self, version_minor: u8) -> Result<Framing, RequestError> {
        if self.transfer_encoding {
            if version_minor == 0 {
                return Err(RequestError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
            }
            // A server may reject a request with both; rejecting leaves nothing to smuggle.
            if self.content_length.is_some() {
                return Err(RequestError::Malformed("both Content-Length and Transfer-Encoding"));
            }
            if !self.chunked_last || self.chunked_count != 1 {
                return Err(RequestError::Malformed("transfer codings do not end in one chunked"));
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            None | Some(0) => Framing::None,
            Some(length) => Framing::Length(length),
        })
    }
}

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|element| !element.is_empty())
}

/// Reads and drops a chunked body, trailers included, and returns its data length.
///
/// RFC 9112 §7.1: `*chunk last-chunk trailer-section CRLF`, where a chunk is
/// `chunk-size [ chunk-ext ] CRLF chunk-data CRLF` and the last chunk has size zero.
fn skip_chunked(reader: &mut Reader) -> Result<u64, RequestError> {
    let mut total: u64 = 0;
    loop {
        let line_len = reader.read_line(CHUNK_LINE_BYTES_MAX)?;
        let size = parse_chunk_size(&reader.buffered()[..line_len - 2])?;
        reader.consume(line_len);
        if size == 0 {
            break;
        }
        reader.skip(size)?;
        total = total.saturating_add(size);
        reader.fill_to(2)?;
        if &reader.buffered()[..2] != b"\r\n" {
            return Err(RequestError::Malformed("chunk data not followed by CRLF"));
        }
        reader.consume(2);
    }

    // Trailer fields are checked for shape and dropped; an empty line ends them.
    let mut trailer_bytes = 0;
    loop {
        let line_len = reader.read_line(CHUNK_LINE_BYTES_MAX)?;
        if line_len == 2 {
            reader.consume(2);
            return Ok(total);
        }
        Fields::default().add(&reader.buffered()[..line_len - 2])?;
        reader.consume(line_len);
        trailer_bytes += line_len;
        if trailer_bytes > HEAD_BYTES_MAX {
            return Err(RequestError::Malformed("trailer section too large"));
        }
    }
}

/// `chunk-size = 1*HEXDIG`, then optionally `BWS ";" chunk-ext`. Extensions are ignored but
/// must not hold control characters.
fn parse_chunk_size(line: &[u8]) -> Result<u64, RequestError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(RequestError::Malformed("chunk size without digits"));
    }
    if digits > CHUNK_SIZE_DIGITS_MAX {
        return Err(RequestError::Malformed("chunk size too large"));
    }
    let rest = &line[digits..];
    if !rest.is_empty() {
        let extension = trim_ows(rest);
        let extension_ok = extension.first() == Some(&b';')
            && extension.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if !extension_ok {
            return Err(RequestError::Malformed("invalid chunk extension"));
        }
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        let value = char::from(d).to_digit(16).unwrap_or_default();
        n * 16 + u64::from(value)
    });
    Ok(size)
}

// ---------------------------------------------------------------------------------------------
// Talking to croupier

/// One croupier to announce to, from `--croupier http://HOST:PORT`.
#[derive(Debug, Clone)]
struct Croupier {
    /// As given on the command line, for the logs.
    url: String,
    /// `HOST:PORT`, resolved at each connect so a croupier given by name may move.
    authority: String,
}

fn parse_croupier_url(url: &str) -> Result<Croupier, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("expected http://HOST:PORT (only plain http is spoken)")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.starts_with(':') || authority.contains('/') {
        return Err("expected http://HOST:PORT with no path".into());
    }

    // A port follows the last colon, unless that colon is inside an IPv6 literal.
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            port.parse::<u16>().map_err(|_| format!("invalid port in {url}"))?;
            true
        }
        _ => false,
    };
    let authority = if has_port { authority.to_string() } else { format!("{authority}:80") };
    Ok(Croupier { url: url.to_string(), authority })
}

fn parse_topic(topic: &str) -> Result<String, String> {
    if is_token(topic.as_bytes()) {
        Ok(topic.to_string())
    } else {
        Err("a topic must be a non-empty HTTP token (letters, digits, -._~ and the like)".into())
    }
}

/// Announces to every croupier now and then every `--every-ms`, until a stop signal.
fn announce_until_stopped(args: &Args, addr: SocketAddr) {
    let every = Duration::from_millis(args.every_ms);
    // Whether the last announce to each croupier worked, so success is logged once per
    // recovery rather than every few seconds.
    let mut announced = vec![false; args.croupiers.len()];

    while !STOP.load(Ordering::SeqCst) {
        for (croupier, ok) in args.croupiers.iter().zip(&mut announced) {
            if STOP.load(Ordering::SeqCst) {
                return;
            }
            *ok = announce(croupier, args, addr, *ok);
        }

        let next = Instant::now() + every;
        while !STOP.load(Ordering::SeqCst) {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(STOP_POLL_MS)));
        }
    }
}

/// Sends one announce and logs the outcome; returns whether croupier took it.
fn announce(croupier: &Croupier, args: &Args, addr: SocketAddr, was_announced: bool) -> bool {
    let body = |local: IpAddr| {
        let host = announced_host(addr.ip(), local);
        serde_json::json!({"topic": args.topic, "host": host, "port": addr.port(), "ttl": args.ttl_s})
            .to_string()
    };
    match control_post(croupier, "/_croupier/announce", body) {
        Ok(reply) if (200..300).contains(&reply.status) => {
            if was_announced {
                debug!(croupier = %croupier.url, reply = %reply.body, "announced");
            } else {
                info!(croupier = %croupier.url, reply = %reply.body, "announced");
            }
            true
        }
        Ok(reply) => {
            warn!(croupier = %croupier.url, status = reply.status, reply = %reply.body,
                "announce refused; will retry");
            false
        }
        Err(e) => {
            warn!(croupier = %croupier.url, error = %e, "announce failed; will retry");
            false
        }
    }
}

/// Sends one leave and logs the outcome.
fn leave(croupier: &Croupier, topic: &str, addr: SocketAddr) {
    let body = |local: IpAddr| {
        let host = announced_host(addr.ip(), local);
        serde_json::json!({"topic": topic, "host": host, "port": addr.port()}).to_string()
    };
    match control_post(croupier, "/_croupier/leave", body) {
        Ok(reply) if (200..300).contains(&reply.status) => {
            info!(croupier = %croupier.url, reply = %reply.body, "left");
        }
        // It never heard of this provider, or the lease ran out already: nothing to undo.
        Ok(reply) if reply.status == 404 => {
            info!(croupier = %croupier.url, "croupier did not know this provider");
        }
        Ok(reply) => {
            warn!(croupier = %croupier.url, status = reply.status, reply = %reply.body,
                "leave refused");
        }
        Err(e) => warn!(croupier = %croupier.url, error = %e, "leave failed"),
    }
}

/// The host to announce: the listening address, or, when listening on every address, the
/// address this machine reaches croupier from, which is the one croupier can reach back.
fn announced_host(listening: IpAddr, local: IpAddr) -> String {
    let host = if listening.is_unspecified() { local } else { listening };
    host.to_string()
}

/// A croupier's answer to a control request.
#[derive(Debug)]
struct ControlReply {
    status: u16,
    /// The JSON body, for the logs (cut at `CONTROL_REPLY_BYTES_MAX`).
    body: String,
}

/// POSTs a JSON body on a fresh connection and reads the reply's status and body. The body is
/// built once connected, since it may name the local address of the connection.
fn control_post(
    croupier: &Croupier,
    path: &str,
    body: impl FnOnce(IpAddr) -> String,
) -> io::Result<ControlReply> {
    let mut stream = connect(&croupier.authority)?;
    stream.set_read_timeout(Some(Duration::from_millis(CONTROL_IO_TIMEOUT_MS)))?;
    stream.set_write_timeout(Some(Duration::from_millis(CONTROL_IO_TIMEOUT_MS)))?;
    let body = body(stream.local_addr()?.ip());

    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        croupier.authority,
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    read_control_reply(&mut stream)
}

fn connect(authority: &str) -> io::Result<TcpStream> {
    let timeout = Duration::from_millis(CONTROL_CONNECT_TIMEOUT_MS);
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Reads until the head and the Content-Length body are in (or the peer closes, or the reply
/// outgrows `CONTROL_REPLY_BYTES_MAX`), then takes the status from the status line.
fn read_control_reply(stream: &mut TcpStream) -> io::Result<ControlReply> {
    let mut reply = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(head_end) = find(&reply, b"\r\n\r\n") {
            let length = content_length(&reply[..head_end]).unwrap_or(usize::MAX);
            if reply.len() - (head_end + 4) >= length {
                break;
            }
        }
        if reply.len() >= CONTROL_REPLY_BYTES_MAX {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A read timeout shows as EAGAIN, whose message would puzzle a reader of the logs.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                let message = format!("no reply within {CONTROL_IO_TIMEOUT_MS} ms");
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
            Err(e) => return Err(e),
        }
    }

    let bad_reply = || io::Error::new(io::ErrorKind::InvalidData, "reply has no HTTP status line");
    let status_line_end = find(&reply, b"\r\n").ok_or_else(bad_reply)?;
    let status_line = String::from_utf8_lossy(&reply[..status_line_end]);
    let mut words = status_line.split(' ');
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    };
    let status = status.ok_or_else(bad_reply)?;
    let body = find(&reply, b"\r\n\r\n")
        .map(|head_end| String::from_utf8_lossy(&reply[head_end + 4..]).trim_end().to_string())
        .unwrap_or_default();
    Ok(ControlReply { status, body })
}

/// The Content-Length of a reply head, if it has a readable one.
fn content_length(head: &[u8]) -> Option<usize> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        if !line[..colon].eq_ignore_ascii_case(b"content-length") {
            return None;
        }
        std::str::from_utf8(trim_ows(&line[colon + 1..])).ok()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(head: &[u8]) -> Result<Framing, &'static str> {
        match parse_head(head) {
            Ok(head) => Ok(head.framing),
            Err(RequestError::Malformed(reason)) => Err(reason),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112_section_6() {
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(framing_of(get), Ok(Framing::None));
        let length = b"POST / HTTP/1.1\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(framing_of(length), Ok(Framing::Length(7)));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(framing_of(chunked), Ok(Framing::Chunked));

        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 7, 8\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +7\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(framing_of(bad).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn persistence_depends_on_version_and_connection() {
        let persistence = |head: &[u8]| parse_head(head).map(|head| head.persistence).ok();
        let keep = Some(Persistence::KeepAlive);
        let close = Some(Persistence::Close);
        assert_eq!(persistence(b"GET / HTTP/1.1\r\n\r\n"), keep);
        assert_eq!(persistence(b"GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n"), close);
        assert_eq!(persistence(b"GET / HTTP/1.0\r\n\r\n"), close);
        assert_eq!(persistence(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), keep);
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        let size = |line: &[u8]| parse_chunk_size(line).ok();
        assert_eq!(size(b"1f"), Some(31));
        assert_eq!(size(b"0"), Some(0));
        assert_eq!(size(b"A;name=value"), Some(10));
        assert_eq!(size(b"a ; name"), Some(10));
        assert_eq!(size(b"fffffffffffffff"), Some((1 << 60) - 1));
        for bad in [&b""[..], b";x", b"1000000000000000", b"5 ", b"5x", b"5;\x01"] {
            assert_eq!(size(bad), None, "accepted {:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn croupier_urls_need_http_and_get_port_80_by_default() {
        let authority = |url: &str| parse_croupier_url(url).map(|c| c.authority).ok();
        assert_eq!(authority("http://127.0.0.1:8000"), Some("127.0.0.1:8000".into()));
        assert_eq!(authority("http://localhost:8000/"), Some("localhost:8000".into()));
        assert_eq!(authority("http://croupier"), Some("croupier:80".into()));
        assert_eq!(authority("http://[::1]:8000"), Some("[::1]:8000".into()));
        assert_eq!(authority("http://[::1]"), Some("[::1]:80".into()));
        for bad in ["https://x:1", "127.0.0.1:8000", "http://", "http://x:1/path", "http://x:99999"]
        {
            assert_eq!(authority(bad), None, "accepted {bad}");
        }
    }
}
