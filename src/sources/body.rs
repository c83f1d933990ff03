//! Request bodies as the HTTP server hands them to handlers: read within a
//! deadline, and within one memory budget shared by every body being read.
//!
//! ```yaml
//! http: { body_read_timeout: 10s, max_buffered_body_bytes: 16777216 }
//! ```
//!
//! Before a signature can be checked the whole body must be in memory, so a
//! client needs no secret to make the server hold it. The budget bounds that
//! memory across all clients: a body that declares its length reserves it
//! before anything is read, one that does not reserves as its bytes arrive,
//! and a body the budget cannot take fails at once with [`BodyError::Busy`]
//! (webhooks answer 503). The deadline, counted from the request's head,
//! frees what a stalled or trickling sender holds ([`BodyError::TimedOut`]).

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The budget is counted in units of this many bytes, so that any body
/// size fits a semaphore's `u32` request.
const UNIT: u64 = 1024;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not all of it arrived within `http.body_read_timeout` of the head.
    #[error("request body not received within {0:?}")]
    TimedOut(Duration),
    /// The bodies being read already hold `http.max_buffered_body_bytes`.
    #[error("too many request bodies are being read at once")]
    Busy,
    /// The connection failed or closed before the body was complete.
    #[error("request body cut short: {0}")]
    Aborted(#[source] axum::BoxError),
}

/// The memory budget and deadline every request body is read within.
/// Cheap to clone; clones share the budget.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    timeout: Duration,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB, so that a body of
    /// `bytes` always fits it) and a deadline of `timeout` from the
    /// request's head.
    pub fn new(bytes: usize, timeout: Duration) -> BodyBudget {
        let units = usize::try_from((bytes as u64).div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            units: Arc::new(Semaphore::new(units)),
            timeout,
        }
    }

    /// `body`, read within this budget and deadline; `declared` is the
    /// request's `Content-Length`, reserved whole before the first byte.
    pub fn guard<B>(&self, body: B, declared: Option<u64>) -> GuardedBody<B> {
        GuardedBody {
            inner: body,
            units: self.units.clone(),
            held: None,
            declared,
            received: 0,
            timeout: self.timeout,
            deadline: Instant::now() + self.timeout,
            sleep: None,
            done: false,
        }
    }

    /// Bytes of the budget not held by any body right now.
    pub fn available(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }
}

/// A request body read within a [`BodyBudget`]. Its share of the budget is
/// given back when it is dropped.
pub struct GuardedBody<B> {
    inner: B,
    units: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    declared: Option<u64>,
    received: u64,
    timeout: Duration,
    deadline: Instant,
    /// Made only once the body has to wait for bytes.
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<B> GuardedBody<B> {
    /// Holds at least `bytes` of the budget; false when it cannot.
    fn reserve(&mut self, bytes: u64) -> bool {
        let wanted = bytes.div_ceil(UNIT);
        let held = self.held.as_ref().map_or(0, |p| p.num_permits() as u64);
        if wanted <= held {
            return true;
        }
        let Ok(more) = u32::try_from(wanted - held) else {
            return false;
        };
        match self.units.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.done = true;
        self.held = None;
        Poll::Ready(Some(Err(error)))
    }

    /// Ready with the timeout once the deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<BodyError> {
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(BodyError::TimedOut(self.timeout))
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.held.is_none()
            && let Some(declared) = this.declared
            && declared > 0
            && !this.reserve(declared)
        {
            return this.fail(BodyError::Busy);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if !this.reserve(this.received) {
                        return this.fail(BodyError::Busy);
                    }
                }
                if Instant::now() >= this.deadline {
                    return this.fail(BodyError::TimedOut(this.timeout));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => this.fail(BodyError::Aborted(error.into())),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(timed_out) => this.fail(timed_out),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that yields `chunks` and then waits forever.
    fn stalled(
        chunks: &[&'static [u8]],
    ) -> http_body_util::StreamBody<
        futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>,
    > {
        use futures::StreamExt;
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        http_body_util::StreamBody::new(
            futures::stream::iter(frames)
                .chain(futures::stream::pending())
                .boxed(),
        )
    }

    #[tokio::test]
    async fn a_declared_length_is_reserved_before_the_first_byte() {
        let budget = BodyBudget::new(4 * 1024, Duration::from_secs(5));
        let mut first = budget.guard(stalled(&[b"abc"]), Some(3 * 1024));
        assert!(first.frame().await.unwrap().is_ok());
        assert_eq!(budget.available(), 1024);
        let mut second = budget.guard(stalled(&[b"abc"]), Some(2 * 1024));
        assert!(matches!(second.frame().await, Some(Err(BodyError::Busy))));
        drop(first);
        assert_eq!(budget.available(), 4 * 1024, "given back when dropped");
        let mut third = budget.guard(stalled(&[b"abc"]), Some(2 * 1024));
        assert!(third.frame().await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_body_as_large_as_the_budget_fits_it() {
        let budget = BodyBudget::new(1_000_000, Duration::from_secs(5));
        let mut body = budget.guard(stalled(&[b"abc"]), Some(1_000_000));
        assert!(body.frame().await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_undeclared_length_is_reserved_as_it_arrives() {
        let budget = BodyBudget::new(2 * 1024, Duration::from_secs(5));
        let kib: &'static [u8] = &[b'x'; 1024];
        let mut body = budget.guard(stalled(&[kib, kib, b"y"]), None);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(budget.available(), 0);
        assert!(matches!(body.frame().await, Some(Err(BodyError::Busy))));
        assert!(body.frame().await.is_none(), "ends after its error");
        assert_eq!(budget.available(), 2 * 1024);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_gives_its_share_back() {
        let budget = BodyBudget::new(8 * 1024, Duration::from_millis(100));
        let mut body = budget.guard(stalled(&[b"part"]), Some(4096));
        assert!(body.frame().await.unwrap().is_ok());
        let started = std::time::Instant::now();
        assert!(matches!(
            body.frame().await,
            Some(Err(BodyError::TimedOut(_)))
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(budget.available(), 8 * 1024);
    }

    #[tokio::test]
    async fn a_broken_body_is_aborted_and_a_whole_one_passes() {
        let budget = BodyBudget::new(8 * 1024, Duration::from_secs(5));
        let broken = http_body_util::StreamBody::new(futures::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("reset")),
        ]));
        let mut body = budget.guard(broken, None);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(matches!(
            body.frame().await,
            Some(Err(BodyError::Aborted(_)))
        ));
        let whole = budget.guard(
            http_body_util::Full::new(Bytes::from_static(b"{}")),
            Some(2),
        );
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "{}");
        assert_eq!(budget.available(), 8 * 1024);
    }
}
