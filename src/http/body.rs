//! Reading a request body with a bound, for both listeners: one rule for
//! what is too large and one way to refuse it (the contract's JSON 413).

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;

use super::body_budget::{BodyBudget, Reserved};
use crate::error::Error;

/// A body of unknown length (chunked) reserves budget in steps of this
/// much as it arrives, rather than per chunk.
const RESERVE_STEP: usize = 64 * 1024;

/// A body over the limit is still read and discarded up to this many bytes
/// (and for at most `DRAIN_TIME`) so the client finishes sending and sees
/// the 413 instead of a reset connection; beyond that the connection is
/// dropped.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads the whole body, refusing more than `limit` bytes or a body that
/// has not arrived in full within `timeout`; `each_chunk` sees every chunk
/// as it arrives (to hash the body while it streams in). With a `budget`,
/// the bytes are reserved there before they are buffered, and held until
/// this returns (the signature is checked right after).
pub(super) async fn read_limited(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
    timeout: Duration,
    budget: Option<&BodyBudget>,
    each_chunk: impl FnMut(&[u8]),
) -> Result<Bytes, Error> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared {
        if length > limit as u64 {
            Box::pin(drain(&mut payload, length)).await;
            return Err(Error::BodyTooLarge { limit });
        }
    }
    let has_body = match declared {
        Some(length) => length > 0,
        None => req.headers().contains_key(header::TRANSFER_ENCODING),
    };
    if !has_body {
        // Neither a length nor chunked encoding: HTTP/1.1 says the body is
        // empty (RFC 9112 section 6.3), and actix gives such a request an
        // empty payload. Nothing to read, reserve or time: the path most
        // signed requests (GETs) take, kept small (see `signed_request`'s
        // future size test).
        return Ok(Bytes::new());
    }
    let mut reserved = BodyBudget::nothing();
    if let (Some(budget), Some(length)) = (budget, declared) {
        // Boxed: only requests with a body reserve, and the reservation's
        // state would otherwise sit in every signed request's future.
        Box::pin(budget.reserve(&mut reserved, length as usize)).await?;
    }
    // Boxed: the timer would otherwise sit in every request's future.
    let outcome = Box::pin(tokio::time::timeout(
        timeout,
        read_chunks(
            &mut payload,
            declared,
            limit,
            budget,
            &mut reserved,
            each_chunk,
        ),
    ))
    .await;
    outcome.unwrap_or_else(|_elapsed| {
        // actix keeps a connection open to drain a dropped chunked body,
        // however slowly it comes (a stalled upload would hold it forever),
        // but closes it when the answer goes out while the body is still
        // being received. So the payload outlives the request for a moment.
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(Duration::from_secs(1)).await;
            drop(payload);
        });
        Err(Error::BodyTimeout {
            secs: timeout.as_secs(),
        })
    })
}

/// `reserved` already holds the declared length; a body without one
/// reserves as it grows.
async fn read_chunks(
    payload: &mut Payload,
    declared: Option<u64>,
    limit: usize,
    budget: Option<&BodyBudget>,
    reserved: &mut Reserved,
    mut each_chunk: impl FnMut(&[u8]),
) -> Result<Bytes, Error> {
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut room = declared.unwrap_or(0) as usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::UnreadableBody(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            Box::pin(drain(payload, u64::MAX)).await;
            return Err(Error::BodyTooLarge { limit });
        }
        if let Some(budget) = budget {
            if body.len() + chunk.len() > room {
                // `room` never passes `limit`, and neither does the body.
                let need = body.len() + chunk.len() - room;
                let more = need.max(RESERVE_STEP).min(limit - room);
                // Boxed, as in `read_limited`.
                Box::pin(budget.reserve(reserved, more)).await?;
                room += more;
            }
        }
        each_chunk(&chunk);
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn drain(payload: &mut Payload, declared: u64) {
    if declared > DRAIN_LIMIT as u64 && declared != u64::MAX {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = payload.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}
