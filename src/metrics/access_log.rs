//! The access log: one line per request, written off the request path.
//!
//! Each core formats its lines into its own buffer; a full buffer, or the
//! once-a-second sweep, hands the batch to one writer thread that does the
//! blocking file writes. A request never waits for the disk. If the writer
//! falls behind by more than [`BATCHES_QUEUED_MAX`] batches, new batches are
//! dropped and counted rather than held in memory without bound.
//!
//! Lines of one core keep their order; lines of different cores are
//! interleaved a batch at a time, so sort by the time field when the order
//! across cores matters.
//!
//! A line reads:
//!
//! ```text
//! 2026-12-03T12:30:00.123Z 127.0.0.1:51234 billing 10.0.0.5:8008 GET /invoices/42 200 154 312 0.874ms 0
//! ```
//!
//! time (UTC), client, topic, provider (`-` when none was reached), method,
//! target, status, bytes received from the client, bytes sent to it, duration,
//! retries.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A core hands its buffer to the writer once it holds this many bytes.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Batches waiting for the writer before new ones are dropped (8 MiB).
pub const BATCHES_QUEUED_MAX: usize = 128;

/// Where the log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Err("an access log needs a path, or - for standard output".into()),
            "-" => Ok(Destination::Stdout),
            path => Ok(Destination::File(PathBuf::from(path))),
        }
    }
}

/// Starts the writer thread; returns the sender the cores batch into.
pub fn start(destination: &Destination) -> std::io::Result<flume::Sender<Vec<u8>>> {
    let mut out: Box<dyn Write + Send> = match destination {
        Destination::Stdout => Box::new(std::io::stdout()),
        Destination::File(path) => {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        }
    };
    let (sender, batches) = flume::bounded::<Vec<u8>>(BATCHES_QUEUED_MAX);
    std::thread::Builder::new().name("croupier-access-log".into()).spawn(move || {
        for batch in batches {
            if let Err(error) = out.write_all(&batch).and_then(|()| out.flush()) {
                tracing::warn!(%error, "access log write failed; lines lost");
            }
        }
    })?;
    Ok(sender)
}

/// One request, as the log line tells it.
#[derive(Debug)]
pub struct Entry<'a> {
    pub client: SocketAddr,
    pub topic: &'a str,
    pub provider: Option<SocketAddr>,
    pub method: &'a str,
    pub target: &'a str,
    pub status: u16,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub duration: Duration,
    pub retries: u32,
}

/// One core's side of the access log.
pub struct CoreLog {
    buffer: RefCell<String>,
    sender: flume::Sender<Vec<u8>>,
    /// Batches dropped because the writer fell behind.
    pub dropped: Cell<u64>,
}

impl CoreLog {
    pub fn new(sender: flume::Sender<Vec<u8>>) -> Self {
        CoreLog { buffer: RefCell::new(String::new()), sender, dropped: Cell::new(0) }
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let mut buffer = self.buffer.borrow_mut();
        format_line(&mut buffer, entry, SystemTime::now());
        if buffer.len() >= BATCH_BYTES {
            let batch = std::mem::take(&mut *buffer);
            drop(buffer);
            self.send(batch);
        }
    }

    /// Hands over whatever is buffered (called once a second).
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.buffer.borrow_mut());
        if !batch.is_empty() {
            self.send(batch);
        }
    }

    fn send(&self, batch: String) {
        if self.sender.try_send(batch.into_bytes()).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }
}

fn format_line(out: &mut String, entry: &Entry<'_>, now: SystemTime) {
    write_time(out, now);
    let provider = entry.provider.map_or_else(|| "-".to_string(), |p| p.to_string());
    let topic = if entry.topic.is_empty() { "-" } else { entry.topic };
    // The target is the client's: keep a line one line whatever it holds.
    let target: String =
        entry.target.chars().map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
    let _ = writeln!(
        out,
        " {} {topic} {provider} {} {target} {} {} {} {:.3}ms {}",
        entry.client,
        entry.method,
        entry.status,
        entry.received_bytes,
        entry.sent_bytes,
        entry.duration.as_secs_f64() * 1000.0,
        entry.retries,
    );
}

/// RFC 3339 UTC time with milliseconds, without a date library: days since
/// the epoch to a civil date (the well-known proleptic Gregorian algorithm).
fn write_time(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, second_of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_documented() {
        let entry = Entry {
            client: "127.0.0.1:51234".parse().unwrap(),
            topic: "billing",
            provider: Some("10.0.0.5:8008".parse().unwrap()),
            method: "GET",
            target: "/invoices/42",
            status: 200,
            received_bytes: 154,
            sent_bytes: 312,
            duration: Duration::from_micros(874),
            retries: 0,
        };
        let mut line = String::new();
        // 2026-12-03T12:30:00.123Z
        format_line(&mut line, &entry, UNIX_EPOCH + Duration::from_millis(1_796_301_000_123));
        assert_eq!(
            line,
            "2026-12-03T12:30:00.123Z 127.0.0.1:51234 billing 10.0.0.5:8008 GET /invoices/42 \
             200 154 312 0.874ms 0\n"
        );
    }

    #[test]
    fn civil_dates() {
        let mut out = String::new();
        write_time(&mut out, UNIX_EPOCH);
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
        out.clear();
        write_time(&mut out, UNIX_EPOCH + Duration::from_secs(951_782_400)); // leap day
        assert_eq!(out, "2000-02-29T00:00:00.000Z");
    }
}
