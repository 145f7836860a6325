//! Readiness shared by `/readyz`, the admin status route and gRPC health: a
//! database ping plus a real storage write and delete, the answer cached
//! for a few seconds so frequent probes cost a handful of storage calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::backup::Backups;
use crate::error::{Error, Result};

/// How long one answer is reused.
pub const FRESH_FOR: Duration = Duration::from_secs(5);
/// A probe that hangs (storage endpoint black-holed) answers "not ready".
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

pub struct Readiness {
    probe: Probe,
    fresh_for: Duration,
    /// The last answer; the lock also makes concurrent callers share one probe.
    last: tokio::sync::Mutex<Option<(Instant, Result<()>)>>,
}

impl Readiness {
    /// Probes the core's database and storage.
    pub fn of(core: Arc<Backups>) -> Self {
        Self::with_probe(FRESH_FOR, move || {
            let core = core.clone();
            Box::pin(async move {
                core.source().ping().await?;
                core.storage().probe().await
            })
        })
    }

    pub fn with_probe(
        fresh_for: Duration,
        probe: impl Fn() -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            probe: Box::new(probe),
            fresh_for,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Ok when ready; the error carries the reason, for admins and logs only.
    pub async fn check(&self) -> Result<()> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < self.fresh_for
        {
            return answer.clone();
        }
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, (self.probe)()).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::unavailable(format!(
                "readiness probe did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            ))),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(fresh_for: Duration, fail: bool) -> (Readiness, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let readiness = Readiness::with_probe(fresh_for, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    Err(Error::unavailable("storage directory /srv/x: read-only"))
                } else {
                    Ok(())
                }
            })
        });
        (readiness, calls)
    }

    #[tokio::test]
    async fn two_hundred_checks_cost_one_probe() {
        for fail in [false, true] {
            let (readiness, calls) = counting(FRESH_FOR, fail);
            for _ in 0..200 {
                assert_eq!(readiness.check().await.is_ok(), !fail);
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "fail={fail}");
        }
    }

    #[tokio::test]
    async fn concurrent_checks_share_one_probe() {
        let (readiness, calls) = counting(FRESH_FOR, false);
        let readiness = Arc::new(readiness);
        let checks: Vec<_> = (0..50)
            .map(|_| {
                let r = readiness.clone();
                tokio::spawn(async move { r.check().await })
            })
            .collect();
        for c in checks {
            assert!(c.await.expect("task").is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stale_answer_is_probed_again() {
        let (readiness, calls) = counting(Duration::ZERO, false);
        for _ in 0..3 {
            readiness.check().await.expect("ready");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
