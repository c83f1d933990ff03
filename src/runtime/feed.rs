//! The consumer feed of one pipeline: polls the bus, hands records to the
//! runner through a bounded channel, and applies the commits the runner sends
//! back. It lives in its own task so that a poll is never cancelled half-way.
//!
//! When the runner cannot take records for a while, the feed pauses its
//! partitions and keeps polling (DESIGN §8: Kafka drops a member that stops
//! polling), holding what was fetched before the pause.

use crate::bus::Consumer;
use crate::model::Record;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a poll waits for new records before checking for commits.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// How long the runner may be unable to take records before the consumer
/// pauses its partitions instead of just not being polled. A pause drops
/// what was fetched ahead, so a brief saturation is left to the short
/// sleeps; a long one (the courier down and every slot retrying) must not
/// keep the consumer from polling (DESIGN §8).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Starts the feed. It stops polling once `shutdown` turns true, then applies
/// the runner's last commits until the runner drops its end of `commits`.
pub fn spawn(
    consumer: Box<dyn Consumer>,
    records: mpsc::Sender<Record>,
    commits: mpsc::UnboundedReceiver<(i32, i64)>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let feed = Feed {
        consumer,
        records,
        commits,
        held: VecDeque::new(),
        saturated_since: None,
        paused: false,
    };
    tokio::spawn(feed.run(shutdown))
}

struct Feed {
    consumer: Box<dyn Consumer>,
    records: mpsc::Sender<Record>,
    commits: mpsc::UnboundedReceiver<(i32, i64)>,
    /// Records polled but not yet taken by the runner, in order.
    held: VecDeque<Record>,
    saturated_since: Option<tokio::time::Instant>,
    paused: bool,
}

impl Feed {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let latest = self.latest_commits();
            self.commit(latest, "offset commit failed; retried with the next commit")
                .await;
            if *shutdown.borrow_and_update() {
                break;
            }
            self.hand_over();
            if self.may_poll().await {
                self.poll().await;
            }
        }
        self.final_commits().await;
    }

    /// The latest commit sent per partition; earlier ones are superseded.
    fn latest_commits(&mut self) -> HashMap<i32, i64> {
        let mut latest = HashMap::new();
        while let Ok((partition, offset)) = self.commits.try_recv() {
            latest.insert(partition, offset);
        }
        latest
    }

    async fn commit(&mut self, commits: HashMap<i32, i64>, on_error: &str) {
        for (partition, offset) in commits {
            if let Err(e) = self.consumer.commit(partition, offset).await {
                tracing::warn!(error = %e, "{on_error}");
            }
        }
    }

    /// Gives the runner what it can take of the held records.
    fn hand_over(&mut self) {
        while let Some(record) = self.held.pop_front() {
            match self.records.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(record)) => {
                    self.held.push_front(record);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.held.clear(),
            }
        }
    }

    /// Whether to poll now: not while the runner is saturated and the
    /// consumer is not paused (not polling is then what holds records back).
    async fn may_poll(&mut self) -> bool {
        let saturated = !self.held.is_empty() || self.records.capacity() == 0;
        if !saturated {
            self.saturated_since = None;
            if self.paused {
                match self.consumer.resume() {
                    Ok(()) => self.paused = false,
                    // Polled while still paused, it returns nothing;
                    // resuming is tried again on the next turn.
                    Err(e) => tracing::warn!(error = %e, "cannot resume the consumer; retrying"),
                }
            }
            return true;
        }
        let since = *self
            .saturated_since
            .get_or_insert_with(tokio::time::Instant::now);
        if !self.paused && since.elapsed() >= PAUSE_AFTER {
            self.paused = self.consumer.pause().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot pause the consumer; it stops polling instead");
                false
            });
            self.saturated_since = None;
        }
        if !self.paused {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.paused
    }

    /// While paused, polling goes on to serve rebalances and keep this member
    /// in its group (Kafka drops a member that does not poll within
    /// `max.poll.interval.ms`); what it still returns was fetched before the
    /// pause and is held.
    async fn poll(&mut self) {
        match self
            .consumer
            .poll(self.records.capacity().max(1), POLL_WAIT)
            .await
        {
            Ok(batch) => self.held.extend(batch),
            Err(e) => {
                tracing::warn!(error = %e, "poll failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Final commits sent by the runner after it stopped.
    async fn final_commits(mut self) {
        while let Some((partition, offset)) = self.commits.recv().await {
            let mut latest = HashMap::from([(partition, offset)]);
            latest.extend(self.latest_commits());
            self.commit(latest, "final offset commit failed").await;
        }
    }
}
