//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/messages` and
//! `/messages/{id}` (with `POST /messages/{id}/retry` for parked messages), the
//! accountant's books (`/accountant`) and the transfers the validators hold
//! (`/governor`, with `POST /governor/{id}/release` and `/cancel`).

use std::{net::SocketAddr, sync::Arc};

use alloy::primitives::B256;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{
    ServiceError, StoreError,
    context::Context,
    guard::{Operator, OperatorError, route_label},
    lifecycle::Stage,
    metrics::CONTENT_TYPE,
};

/// Binds `listen` and serves until the task is aborted; returns the bound address.
pub(crate) async fn serve(
    context: Arc<Context>,
    listen: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), ServiceError> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| ServiceError::Http(format!("{listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| ServiceError::Http(e.to_string()))?;
    let app = router(context);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "HTTP server stopped");
        }
    });
    Ok((addr, task))
}

fn router(context: Arc<Context>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/messages", get(list))
        .route("/messages/{id}", get(message))
        .route("/messages/{id}/retry", post(retry))
        .route("/accountant", get(accountant))
        .route("/governor", get(governor))
        .route("/governor/{id}/release", post(|state, id| operate(state, id, Operator::Release)))
        .route("/governor/{id}/cancel", post(|state, id| operate(state, id, Operator::Cancel)))
        .with_state(context)
}

async fn metrics(State(context): State<Arc<Context>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], context.metrics.render()).into_response()
}

async fn readyz(State(context): State<Arc<Context>>) -> Response {
    let reasons = context.not_ready();
    if reasons.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ready": false, "reasons": reasons}))).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list(State(context): State<Arc<Context>>, Query(query): Query<ListQuery>) -> Response {
    let stage = match query.status.as_deref().map(str::parse::<Stage>).transpose() {
        Ok(stage) => stage,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match context.store.list(stage, query.limit.unwrap_or(1000)) {
        Ok(records) => Json(records).into_response(),
        Err(e) => store_error(e),
    }
}

fn parse_id(id: &str) -> Result<B256, String> {
    id.parse::<B256>().map_err(|_| format!("{id:?} is not a 32-byte hex message id"))
}

async fn message(State(context): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match context.store.get(&id) {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no message {id}")),
        Err(e) => store_error(e),
    }
}

/// Puts a parked message back on the bus (under a fresh `Nats-Msg-Id`, since the server
/// remembers the first one) for another delivery attempt.
async fn retry(State(context): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    // Refused (not parked, or no certificate) is the answer below, not a warning.
    let updated = context.store.update(&[id], |r| r.retry().is_ok());
    match updated {
        Ok(records) if records.is_empty() => {
            error(StatusCode::CONFLICT, format!("message {id} is not parked with a certificate (or does not exist)"))
        }
        Ok(_) => match crate::collector::publish(&context, &[id]).await {
            Ok(()) => match context.store.get(&id) {
                Ok(Some(record)) => {
                    info!(%id, origin = record.origin, destination = record.destination, "retried by an operator");
                    Json(record).into_response()
                }
                _ => StatusCode::ACCEPTED.into_response(),
            },
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        Err(e) => store_error(e),
    }
}

/// The books of every route: `[{route, origin, destination, locked, released, unbacked}]`
/// (amounts as decimal strings of base units).
async fn accountant(State(context): State<Arc<Context>>) -> Response {
    match context.store.books() {
        Ok(ledger) => {
            let routes: Vec<_> = ledger
                .routes()
                .iter()
                .map(|(&(origin, destination), books)| {
                    serde_json::json!({
                        "route": route_label(&context, origin, destination),
                        "origin": origin,
                        "destination": destination,
                        "locked": books.locked.to_string(),
                        "released": books.released.to_string(),
                        "unbacked": books.unbacked().to_string(),
                    })
                })
                .collect();
            Json(routes).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// Every held transfer, oldest first.
async fn governor(State(context): State<Arc<Context>>) -> Response {
    match context.store.held() {
        Ok(held) => Json(held).into_response(),
        Err(e) => store_error(e),
    }
}

/// Releases or cancels a held transfer for an operator.
async fn operate(State(context): State<Arc<Context>>, Path(id): Path<String>, action: Operator) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match crate::guard::operate(&context, id, action) {
        Ok(held) => Json(held).into_response(),
        Err(e @ OperatorError::NotHeld(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ OperatorError::Accountant { .. }) => error(StatusCode::CONFLICT, e.to_string()),
        Err(OperatorError::Store(e)) => store_error(e),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

fn store_error(e: StoreError) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}
