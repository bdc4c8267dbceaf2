//! A budget on the request-body bytes held in memory at once by requests
//! whose signature is not known yet (CONTRACT.md section 4: memory stays
//! bounded whatever a client sends). Anyone who knows a partner's public
//! key id can start a request with a body just under the limit and stall:
//! 300 such connections held 407 MB until the body timeout. Every public
//! request reserves its body's bytes here before they are buffered; past
//! the budget a new one waits briefly, then gets 503 `unavailable` with
//! `Retry-After`, and memory stays at the budget.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// How long a request waits for room in the budget before it is refused.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(1);

pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

/// Bytes held for one request; given back when dropped.
pub struct Reserved(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub fn new(total_bytes: usize) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total_bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    pub fn nothing() -> Reserved {
        Reserved(None)
    }

    /// Adds `bytes` to what `reserved` holds, waiting at most
    /// `WAIT_FOR_ROOM` for other requests to give some back. Written so
    /// that the usual case, room at once, adds nothing to the caller's
    /// future: only a full budget awaits (boxed) a timer.
    pub async fn reserve(&self, reserved: &mut Reserved, bytes: usize) -> Result<(), Error> {
        if bytes == 0 {
            return Ok(());
        }
        let count = u32::try_from(bytes).map_err(|_| Error::Overloaded)?;
        let permit = match self.bytes.clone().try_acquire_many_owned(count) {
            Ok(permit) => permit,
            Err(_) => Box::pin(self.wait_for_room(count)).await?,
        };
        match &mut reserved.0 {
            Some(held) => held.merge(permit),
            None => reserved.0 = Some(permit),
        }
        Ok(())
    }

    async fn wait_for_room(&self, count: u32) -> Result<OwnedSemaphorePermit, Error> {
        tokio::time::timeout(WAIT_FOR_ROOM, self.bytes.clone().acquire_many_owned(count))
            .await
            .map_err(|_| Error::Overloaded)?
            .map_err(|_| Error::Overloaded)
    }

    /// Bytes free now, for the tests and the metrics.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}
