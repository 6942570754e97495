//! Read buffers: a per-core pool, and the window of unconsumed bytes a
//! connection has read.
//!
//! Buffers are owned and handed to the kernel for each read or write
//! (io_uring needs the memory to stay put until the operation completes), so
//! a buffer moves out of its [`Inbound`] into an operation and back. Body
//! bytes are written straight out of the buffer they were read into, through
//! a slice of it; nothing copies them.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::buf::{IoBuf, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::Sleep;

use crate::runtime::drain::{COARSE_MIN, Drain, Wait};

/// Size of a pooled buffer, in bytes. Large enough for nearly every head and
/// for a good stride of a body; a head that needs more grows its buffer up
/// to the head limit, and such a buffer is not returned to the pool.
pub const BUF_BYTES: usize = 16 * 1024;

/// Most read buffers kept free per core (1 MiB); the rest are freed, so a
/// burst does not pin its peak memory for ever. Below this cap, free
/// buffers nobody took for a whole sweep interval are freed too
/// ([`BufPool::trim`]).
pub const FREE_BUFS_MAX: usize = 64;

/// Initial size of a buffer for a head croupier writes, in bytes: most
/// heads fit; a larger one grows its buffer.
pub const HEAD_BUF_BYTES: usize = 1024;

/// Largest head buffer taken back into the pool, in bytes.
const HEAD_BUF_KEPT_MAX: usize = 8 * 1024;

/// Most head buffers kept free per core.
const FREE_HEAD_BUFS_MAX: usize = 256;

/// A core's free buffers: read buffers, and small ones for the heads
/// croupier writes.
#[derive(Default)]
pub struct BufPool {
    free: FreeList,
    free_heads: FreeList,
}

/// Free buffers of one kind, and the fewest there were since the last trim:
/// that many were not needed during the whole interval.
#[derive(Default)]
struct FreeList {
    bufs: RefCell<Vec<Vec<u8>>>,
    low_water: Cell<usize>,
}

impl FreeList {
    fn pop(&self) -> Option<Vec<u8>> {
        let mut bufs = self.bufs.borrow_mut();
        let buf = bufs.pop();
        self.low_water.set(self.low_water.get().min(bufs.len()));
        buf
    }

    fn push_below(&self, buf: Vec<u8>, max: usize) {
        let mut bufs = self.bufs.borrow_mut();
        if bufs.len() < max {
            bufs.push(buf);
        }
    }

    /// Frees the buffers that stayed unused since the last trim.
    fn trim(&self) {
        let mut bufs = self.bufs.borrow_mut();
        let keep = bufs.len() - self.low_water.get().min(bufs.len());
        bufs.truncate(keep);
        bufs.shrink_to(keep);
        self.low_water.set(keep);
    }
}

impl BufPool {
    /// A read buffer of [`BUF_BYTES`].
    pub fn take(&self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(BUF_BYTES))
    }

    /// An empty buffer to write a head into.
    pub fn take_head(&self) -> Vec<u8> {
        self.free_heads.pop().unwrap_or_else(|| Vec::with_capacity(HEAD_BUF_BYTES))
    }

    /// Frees the buffers no request needed since the last trim, so the
    /// memory a burst took goes back once the burst is over; called by the
    /// core's sweep once a second. Under steady load the pool keeps what
    /// the load uses.
    pub fn trim(&self) {
        self.free.trim();
        self.free_heads.trim();
    }

    /// Takes back a buffer of either kind.
    pub fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        if buf.capacity() == BUF_BYTES {
            self.free.push_below(buf, FREE_BUFS_MAX);
        } else if (HEAD_BUF_BYTES..=HEAD_BUF_KEPT_MAX).contains(&buf.capacity()) {
            self.free_heads.push_below(buf, FREE_HEAD_BUFS_MAX);
        }
    }
}

/// How a read ended, when it did not yield bytes.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    TimedOut,
}

/// Bytes read from one peer and not yet consumed: `buf[start..]`.
#[derive(Default)]
pub struct Inbound {
    buf: Vec<u8>,
    start: usize,
    /// Bytes written out of this buffer so far, for the byte counters.
    written: u64,
}

impl Inbound {
    pub fn new(buf: Vec<u8>) -> Self {
        debug_assert!(buf.is_empty());
        Inbound { buf, start: 0, written: 0 }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Bytes that fit behind the held ones without moving or growing the
    /// buffer.
    pub fn spare(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// The attached buffer's size: as `capacity_max` of [`Self::read_more`],
    /// a read that neither moves nor grows the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether a buffer is attached (idle connections hold none).
    pub fn has_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Bytes written out of this buffer so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Marks `n` bytes at the front as used.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.start);
        self.start += n;
        if self.start == self.buf.len() {
            // Empty again: later reads start at the front, with no copy.
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Gives the buffer back to the pool; the window must be empty.
    pub fn release(&mut self, pool: &BufPool) {
        debug_assert!(self.is_empty());
        pool.put(std::mem::take(&mut self.buf));
        self.start = 0;
    }

    /// Gives the buffer back when empty; otherwise frees it (bytes left over
    /// from a connection that is closing).
    pub fn release_or_drop(&mut self, pool: &BufPool) {
        if self.is_empty() {
            self.release(pool);
        } else {
            *self = Inbound { written: self.written, ..Inbound::default() };
        }
    }

    /// Attaches a buffer from the pool if none is attached.
    pub fn ensure_buffer(&mut self, pool: &BufPool) {
        if !self.has_buffer() {
            self.buf = pool.take();
            self.start = 0;
        }
    }

    /// Reads more bytes after the ones held, growing the buffer up to
    /// `capacity_max` bytes when it is full. Returns 0 at end of stream.
    pub async fn read_more(
        &mut self,
        stream: &mut TcpStream,
        capacity_max: usize,
        timeout: Duration,
    ) -> Result<usize, ReadError> {
        if self.buf.len() == self.buf.capacity() {
            if self.start > 0 {
                // Only a head still being read is ever moved, and only when
                // it does not fit behind the bytes already consumed.
                self.buf.drain(..self.start);
                self.start = 0;
            } else if self.buf.capacity() < capacity_max {
                let grow = (self.buf.capacity().max(BUF_BYTES)).min(capacity_max - self.buf.len());
                self.buf.reserve_exact(grow);
            }
        }
        let end = self.buf.capacity().min(capacity_max.max(self.buf.len() + 1));
        self.read_into(stream, end, timeout).await
    }

    /// Reads at most `limit` bytes into an empty window, so a body read never
    /// runs into the bytes of the next message.
    pub async fn read_at_most(
        &mut self,
        stream: &mut TcpStream,
        limit: u64,
        timeout: Duration,
    ) -> Result<usize, ReadError> {
        debug_assert!(self.is_empty() && self.has_buffer());
        let end = usize::try_from(limit).unwrap_or(usize::MAX).min(self.buf.capacity());
        self.read_into(stream, end, timeout).await
    }

    async fn read_into(
        &mut self,
        stream: &mut TcpStream,
        end: usize,
        timeout: Duration,
    ) -> Result<usize, ReadError> {
        let begin = self.buf.len();
        let slice = SliceMut::new(std::mem::take(&mut self.buf), begin, end);
        match read_timed(stream, slice, timeout).await {
            (result, Some(slice)) => {
                self.buf = slice.into_inner();
                result
            }
            // The buffer went with the abandoned read, and what it held with
            // it; the window is empty now, which is all a caller that ends
            // the connection needs.
            (result, None) => {
                self.start = 0;
                result
            }
        }
    }

    /// Writes `len` bytes at the front of the window to `stream` and consumes
    /// them. The bytes leave from this buffer: no copy is made.
    pub async fn write_front(&mut self, stream: &mut TcpStream, len: usize) -> io::Result<()> {
        self.write_range(stream, 0, len).await?;
        self.consume(len);
        Ok(())
    }

    /// Writes `len` bytes starting `offset` bytes into the window, without
    /// consuming them (a request kept for a possible retry).
    pub async fn write_range(
        &mut self,
        stream: &mut TcpStream,
        offset: usize,
        len: usize,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let begin = self.start + offset;
        debug_assert!(begin + len <= self.buf.len());
        let slice = std::mem::take(&mut self.buf).slice(begin..begin + len);
        let (result, slice) = stream.write_all(slice).await;
        self.buf = slice.into_inner();
        self.written += len as u64;
        result.map(drop)
    }
}

/// A head and a run of body bytes, written with one `writev`.
///
/// Both buffers are owned by this value while the kernel reads them, as
/// io_uring requires; the iovecs point into their heap storage, which does
/// not move when the vectors themselves are moved.
struct HeadAndBody {
    head: Vec<u8>,
    body: Vec<u8>,
    iovecs: [libc::iovec; 2],
}

impl HeadAndBody {
    fn new(head: Vec<u8>, body: Vec<u8>, offset: usize, len: usize) -> Self {
        debug_assert!(offset + len <= body.len());
        let iovecs = [
            libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() },
            libc::iovec {
                // SAFETY: `offset + len` is within `body`, checked above and
                // by the callers' window arithmetic.
                iov_base: unsafe { body.as_ptr().add(offset) } as *mut libc::c_void,
                iov_len: len,
            },
        ];
        HeadAndBody { head, body, iovecs }
    }
}

// SAFETY: the iovecs are built from the two vectors this value owns and that
// nothing resizes while it exists, so they stay valid and unchanged for as
// long as the runtime holds the value.
unsafe impl monoio::buf::IoVecBuf for HeadAndBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

impl Inbound {
    /// Writes `head` and then `len` bytes starting `offset` bytes into the
    /// window, with one system call, without consuming them. Returns the
    /// head's buffer.
    pub async fn write_after_head(
        &mut self,
        stream: &mut TcpStream,
        head: Vec<u8>,
        offset: usize,
        len: usize,
    ) -> (io::Result<()>, Vec<u8>) {
        let begin = self.start + offset;
        let both = HeadAndBody::new(head, std::mem::take(&mut self.buf), begin, len);
        let (result, both) = stream.write_vectored_all(both).await;
        self.buf = both.body;
        self.written += len as u64;
        (result.map(drop), both.head)
    }
}

/// A read that gives up after `timeout`.
///
/// On timeout the read is dropped: monoio asks the kernel to cancel it and
/// frees the buffer once the kernel is done with it, so the buffer does not
/// come back (`None`), and bytes that arrived at the last moment are lost.
/// That is safe because every timed read's caller ends the connection on a
/// timeout; a wait that must go on after its timeout (the wait for
/// `100 Continue`) waits for readiness instead, which loses nothing. This
/// spares every read a canceller registration (a hashed set insertion and
/// removal, and an allocation per request), which cancelling and awaiting
/// the read would need.
pub async fn read_timed(
    stream: &mut TcpStream,
    buf: SliceMut<Vec<u8>>,
    timeout: Duration,
) -> (Result<usize, ReadError>, Option<SliceMut<Vec<u8>>>) {
    let mut read = pin!(stream.read(buf));
    let drain = Drain::current();
    let mut expiry = pin!(Expiry::new(&drain, timeout));
    poll_fn(|cx| {
        if let Poll::Ready((result, buf)) = read.as_mut().poll(cx) {
            return Poll::Ready((result.map_err(ReadError::Io), Some(buf)));
        }
        if expiry.as_mut().poll(cx).is_ready() {
            return Poll::Ready((Err(ReadError::TimedOut), None));
        }
        Poll::Pending
    })
    .await
}

/// The end of a read's timeout: a long one from the core's coarse clock, a
/// short one from a timer. The timer is boxed so that the futures of every
/// read, most of which have long timeouts, do not carry its 640 bytes.
enum Expiry<'a> {
    Coarse(Wait<'a>),
    Fine(Pin<Box<Sleep>>),
}

impl<'a> Expiry<'a> {
    fn new(drain: &'a Drain, timeout: Duration) -> Self {
        if timeout >= COARSE_MIN {
            Expiry::Coarse(drain.after(timeout))
        } else {
            Expiry::Fine(Box::pin(monoio::time::sleep(timeout)))
        }
    }
}

impl Future for Expiry<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Both variants are Unpin: a `Wait` holds plain data, the timer is
        // behind its box.
        match self.get_mut() {
            Expiry::Coarse(wait) => Pin::new(wait).poll(cx).map(drop),
            Expiry::Fine(sleep) => sleep.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_count(pool: &BufPool) -> usize {
        pool.free.bufs.borrow().len()
    }

    #[test]
    fn trim_frees_what_a_whole_interval_left_unused() {
        let pool = BufPool::default();
        // A burst of ten at once, all given back.
        let burst: Vec<_> = (0..10).map(|_| pool.take()).collect();
        burst.into_iter().for_each(|buf| pool.put(buf));
        pool.trim();
        assert_eq!(free_count(&pool), 10, "the burst's interval needed all ten");

        // Steady load of three at a time: the seven below stay unused.
        for _ in 0..100 {
            let held: Vec<_> = (0..3).map(|_| pool.take()).collect();
            held.into_iter().for_each(|buf| pool.put(buf));
        }
        pool.trim();
        assert_eq!(free_count(&pool), 3);

        // No load at all: everything goes.
        pool.trim();
        assert_eq!(free_count(&pool), 0);
    }
}
