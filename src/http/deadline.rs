//! The whole-request deadline: a request's body must have arrived within
//! `server.request_body_timeout_ms` of its head (the head itself is bounded
//! by actix-http's `client_request_timeout`). Without it a client trickling
//! a body, or announcing one it never sends, held a connection slot for as
//! long as it liked, and enough of them starved every other request.
//!
//! Invariants:
//! - Only the body *read* is bounded. The handler is never cut off: once the
//!   body is complete the deadline no longer applies, so a payment decision
//!   (a consume) always runs to its answer.
//! - A body that misses the deadline fails its reader; the answer becomes
//!   408 `REQUEST_TIMEOUT` whatever the handler made of the failure.
//! - A request whose body was not read to its end (timed out, or a handler
//!   that answers without reading it, as `/v1/authorize` does) is answered
//!   with `Connection: close` and its connection is closed. The body stays
//!   owned here until the answer is written: actix-http closes a connection
//!   whose body is still unread, but keeps *draining* a chunked body whose
//!   reader is gone, with no timer at all.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONNECTION, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, ResponseError, web};
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use super::AppState;
use super::problem::ApiError;

/// How long an unread body is kept after an error answer (see below).
const ERROR_HOLD: Duration = Duration::from_secs(2);

/// How far a request's body got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Reading,
    /// Read to its end (or failed on the client's side): nothing is left.
    Done,
    /// The deadline passed before the end.
    TimedOut,
}

/// The body as the handler reads it: the real one, failing once the
/// deadline has passed. The real one is shared with the middleware, which
/// keeps it until the answer is written.
struct Bounded {
    inner: Rc<RefCell<Payload>>,
    progress: Rc<Cell<Progress>>,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Stream for Bounded {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.progress.get() {
            Progress::Done => return Poll::Ready(None),
            Progress::TimedOut => return Poll::Ready(Some(Err(timed_out(self.limit)))),
            Progress::Reading => {}
        }
        // The deadline first: a trickle that always has a byte ready must
        // not outrun it.
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.progress.set(Progress::TimedOut);
            return Poll::Ready(Some(Err(timed_out(self.limit))));
        }
        let polled = Pin::new(&mut *self.inner.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.progress.set(Progress::Done),
            _ => {}
        }
        polled
    }
}

fn timed_out(limit: Duration) -> PayloadError {
    PayloadError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the body did not arrive within {} ms", limit.as_millis()),
    ))
}

/// A response body that keeps the request's body alive until it is
/// dropped, i.e. until actix-http has written the answer and decided the
/// connection's fate.
struct Holding {
    body: BoxBody,
    _request_body: Rc<RefCell<Payload>>,
}

impl MessageBody for Holding {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The middleware: bounds the body read of every request that has a body.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.request_body_timeout)
        .unwrap_or(Duration::from_secs(10));
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        return next
            .call(req)
            .await
            .map(|r| r.map_body(|_, b| BoxBody::new(b)).map_into_left_body());
    }
    let inner = Rc::new(RefCell::new(payload));
    let progress = Rc::new(Cell::new(Progress::Reading));
    let bounded = Bounded {
        inner: inner.clone(),
        progress: progress.clone(),
        sleep: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
        limit,
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(bounded),
    });
    // (No clone of the request may live across the call: routing needs it
    // unshared.)
    let res = match next.call(req).await {
        Ok(res) => res.map_body(|_, b| BoxBody::new(b)),
        Err(e) => {
            // A middleware's error becomes its answer inside actix-http, out
            // of reach: the body is kept a moment longer instead, past the
            // point where the answer is written and the connection's fate
            // decided.
            if progress.get() != Progress::Done {
                actix_web::rt::spawn(async move {
                    tokio::time::sleep(ERROR_HOLD).await;
                    drop(inner);
                });
            }
            return Err(e);
        }
    };
    let mut res = match progress.get() {
        Progress::TimedOut => {
            let http = res.request().clone();
            drop(res);
            ServiceResponse::new(http, ApiError::RequestTimeout(limit).error_response())
        }
        _ => res,
    };
    if progress.get() == Progress::Done {
        return Ok(res.map_into_left_body());
    }
    res.response_mut()
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Ok(res
        .map_body(|_, body| Holding {
            body,
            _request_body: inner,
        })
        .map_into_right_body())
}
