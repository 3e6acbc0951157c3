//! The feed HTTP service (axum on tokio).

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Instant,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use prometheus::{Encoder as _, HistogramOpts, HistogramVec, Registry, TextEncoder};
use serde::Deserialize;

use crate::feed::Feed as FeedData;

#[derive(Clone)]
struct AppState {
    feed: Arc<RwLock<FeedData>>,
    latency: HistogramVec,
    registry: Registry,
}

#[derive(Deserialize)]
struct FeedQuery {
    user: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    20
}

#[derive(Deserialize)]
struct PublishBody {
    author: u32,
    title: String,
}

#[derive(Deserialize)]
struct LikeBody {
    video: u32,
}

fn observe(state: &AppState, route: &str, started: Instant) {
    state
        .latency
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
}

async fn feed(State(state): State<AppState>, Query(q): Query<FeedQuery>) -> Response {
    let started = Instant::now();
    let ranked = {
        let feed = state
            .feed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        feed.rank(q.user, q.limit.min(100))
    };
    observe(&state, "feed", started);
    match ranked {
        Some(items) => Json(items).into_response(),
        None => (StatusCode::NOT_FOUND, "no such user\n").into_response(),
    }
}

async fn publish(State(state): State<AppState>, Json(body): Json<PublishBody>) -> Response {
    let started = Instant::now();
    let id = {
        let mut feed = state
            .feed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seed = feed.videos.len() as u64;
        feed.publish(body.author, body.title, seed)
    };
    observe(&state, "publish", started);
    Json(serde_json::json!({ "video": id })).into_response()
}

async fn like(State(state): State<AppState>, Json(body): Json<LikeBody>) -> Response {
    let started = Instant::now();
    let likes = {
        let mut feed = state
            .feed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        feed.like(body.video)
    };
    observe(&state, "like", started);
    match likes {
        Some(likes) => Json(serde_json::json!({ "likes": likes })).into_response(),
        None => (StatusCode::NOT_FOUND, "no such video\n").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&state.registry.gather(), &mut buf)
        .is_err()
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([("content-type", "text/plain; version=0.0.4")], buf).into_response()
}

/// Serves until the process is stopped.
pub fn serve(addr: SocketAddr, threads: usize, users: usize, videos: usize) -> anyhow::Result<()> {
    let data = FeedData::generate(42, users, videos);
    let registry = Registry::new();
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "feed_request_duration_seconds",
            "Time to handle a request, in the handler (excludes queueing for a CPU before it runs).",
        )
        .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 14)?),
        &["route"],
    )?;
    registry.register(Box::new(latency.clone()))?;
    let state = AppState {
        feed: Arc::new(RwLock::new(data)),
        latency,
        registry,
    };
    let app = Router::new()
        .route("/feed", get(feed))
        .route("/publish", post(publish))
        .route("/like", post(like))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("feed-worker")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("demo-feed: serving on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
