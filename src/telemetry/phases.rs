//! Where an invocation's time went (behaviour §9): fetching the secret,
//! getting a connection, running statements (lock waits included), delivering
//! events. Measured with the clock around the real calls — [`timed`] wraps
//! them — into the invocation's [`Phases`], which [`scope`] makes current for
//! the invocation's task.
//!
//! Overlapping calls of one phase (statements pipelined with `try_join!`) are
//! counted once: a phase's clock runs while at least one of its calls is in
//! flight. Phases may nest: delivery (`publish`) runs statements too, which
//! also count in `db`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Secret,
    Connect,
    Db,
    Publish,
}

impl Phase {
    fn index(self) -> usize {
        match self {
            Phase::Secret => 0,
            Phase::Connect => 1,
            Phase::Db => 2,
            Phase::Publish => 3,
        }
    }
}

/// Milliseconds per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub secret_ms: u64,
    pub connect_ms: u64,
    pub db_ms: u64,
    pub publish_ms: u64,
}

#[derive(Default)]
struct Clock {
    total: Duration,
    in_flight: u32,
    since: Option<Instant>,
}

/// The phase clocks of one invocation.
#[derive(Default)]
pub struct Phases {
    clocks: Mutex<[Clock; 4]>,
}

impl Phases {
    fn enter(&self, phase: Phase) {
        if let Ok(mut clocks) = self.clocks.lock() {
            let c = &mut clocks[phase.index()];
            if c.in_flight == 0 {
                c.since = Some(Instant::now());
            }
            c.in_flight += 1;
        }
    }

    fn exit(&self, phase: Phase) {
        if let Ok(mut clocks) = self.clocks.lock() {
            let c = &mut clocks[phase.index()];
            c.in_flight = c.in_flight.saturating_sub(1);
            if c.in_flight == 0 {
                if let Some(since) = c.since.take() {
                    c.total += since.elapsed();
                }
            }
        }
    }

    pub fn timings(&self) -> Timings {
        let ms = |c: &Clock| c.total.as_millis() as u64;
        match self.clocks.lock() {
            Ok(c) => Timings {
                secret_ms: ms(&c[0]),
                connect_ms: ms(&c[1]),
                db_ms: ms(&c[2]),
                publish_ms: ms(&c[3]),
            },
            Err(_) => Timings::default(),
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<Phases>;
}

/// Runs `fut` with `phases` as the invocation's clocks.
pub async fn scope<F: Future>(phases: Arc<Phases>, fut: F) -> F::Output {
    CURRENT.scope(phases, fut).await
}

struct Running {
    phases: Arc<Phases>,
    phase: Phase,
}

impl Drop for Running {
    // Also when the future is dropped unfinished (a timeout): the clock stops.
    fn drop(&mut self) {
        self.phases.exit(self.phase);
    }
}

/// Runs `fut`, its time counted in `phase` of the current invocation (if any).
pub async fn timed<F: Future>(phase: Phase, fut: F) -> F::Output {
    let _running = CURRENT.try_with(Arc::clone).ok().map(|phases| {
        phases.enter(phase);
        Running { phases, phase }
    });
    fut.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn overlapping_calls_count_once_and_phases_apart() {
        let phases = Arc::new(Phases::default());
        scope(phases.clone(), async {
            let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));
            // Two statements in flight together for 30 ms: 30, not 50.
            tokio::join!(timed(Phase::Db, sleep(30)), timed(Phase::Db, sleep(20)));
            timed(Phase::Db, sleep(10)).await;
            // Delivery with a statement inside it.
            timed(Phase::Publish, async {
                sleep(5).await;
                timed(Phase::Db, sleep(7)).await;
            })
            .await;
            timed(Phase::Connect, sleep(3)).await;
        })
        .await;
        let t = phases.timings();
        assert_eq!(
            t,
            Timings {
                secret_ms: 0,
                connect_ms: 3,
                db_ms: 47,
                publish_ms: 12
            }
        );
    }

    #[tokio::test]
    async fn outside_an_invocation_nothing_is_counted() {
        assert_eq!(timed(Phase::Db, async { 7 }).await, 7);
    }
}
