//! A `PutEvents` endpoint of our own, programmable the way the real service
//! misbehaves: a latency added to every request, entries it refuses
//! (`ThrottlingException`, as EventBridge answers per entry), requests it
//! never answers, requests it holds until the test lets them go. It speaks
//! the AWS JSON 1.1 protocol over HTTP/1.1 keep-alive, as the SDK sends it,
//! and records what it saw: every call's entries in arrival order, what it
//! accepted and refused, and how many calls were in flight at once.
//!
//! The delivery tests (tests/api/delivery.rs) use it, and so does the
//! delivery bench (benches/scale.rs includes this file).

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Which entries the endpoint refuses.
#[derive(Debug, Clone, Default)]
pub enum Refuse {
    #[default]
    Nothing,
    /// The second, fourth, … entry of every call.
    EveryOther,
    /// Entries whose `eventId` is one of these.
    Ids(HashSet<i64>),
    /// Every entry.
    All,
}

/// One request as the endpoint saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The entries' `eventId`s and `batchId`s, in request order.
    pub ids: Vec<i64>,
    pub batches: Vec<String>,
    /// Ticks of the endpoint's clock (one per arrival and per answer):
    /// two calls were in flight together when their spans overlap.
    pub arrived: u64,
    /// `u64::MAX` while unanswered (or never answered).
    pub answered: u64,
}

impl Call {
    pub fn overlaps(&self, other: &Call) -> bool {
        self.arrived < other.answered && other.arrived < self.answered
    }
}

#[derive(Default)]
struct State {
    latency: Mutex<Duration>,
    refuse: Mutex<Refuse>,
    /// Requests read from now on are never answered.
    hang: AtomicBool,
    /// `false`: requests wait (after their latency) until it turns `true`.
    open: Mutex<Option<watch::Sender<bool>>>,
    calls: Mutex<Vec<Call>>,
    clock: AtomicU64,
    accepted: Mutex<Vec<i64>>,
    refused: Mutex<Vec<i64>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    hung: AtomicUsize,
    /// Woken whenever a request arrives.
    arrived: Notify,
}

/// The endpoint; clones share it.
#[derive(Clone)]
pub struct PutEvents {
    state: Arc<State>,
    gate: watch::Receiver<bool>,
}

impl Default for PutEvents {
    fn default() -> Self {
        let (open, gate) = watch::channel(true);
        let state = State {
            open: Mutex::new(Some(open)),
            ..State::default()
        };
        PutEvents {
            state: Arc::new(state),
            gate,
        }
    }
}

impl PutEvents {
    /// Listens on a free loopback port (on the current runtime); returns its URL.
    pub async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                let me = me.clone();
                tokio::spawn(async move { me.serve(conn).await });
            }
        });
        url
    }

    pub fn set_latency(&self, latency: Duration) {
        *self.state.latency.lock().unwrap() = latency;
    }

    pub fn refuse(&self, refuse: Refuse) {
        *self.state.refuse.lock().unwrap() = refuse;
    }

    /// Requests from now on are read and never answered (until `hang(false)`).
    pub fn hang(&self, on: bool) {
        self.state.hang.store(on, Ordering::SeqCst);
    }

    /// Requests from now on wait, in flight, until [`PutEvents::release`].
    pub fn hold(&self) {
        if let Some(open) = self.state.open.lock().unwrap().as_ref() {
            open.send_replace(false);
        }
    }

    pub fn release(&self) {
        if let Some(open) = self.state.open.lock().unwrap().as_ref() {
            open.send_replace(true);
        }
    }

    /// Waits until at least `n` requests are in flight (arrived, not answered).
    pub async fn wait_in_flight(&self, n: usize) {
        loop {
            let arrived = self.state.arrived.notified();
            if self.in_flight() >= n {
                return;
            }
            arrived.await;
        }
    }

    /// Waits until at least `n` requests were left unanswered.
    pub async fn wait_hung(&self, n: usize) {
        loop {
            let arrived = self.state.arrived.notified();
            if self.state.hung.load(Ordering::SeqCst) >= n {
                return;
            }
            arrived.await;
        }
    }

    /// Every call, in the order they arrived.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> Vec<i64> {
        self.state.accepted.lock().unwrap().clone()
    }

    pub fn refused(&self) -> Vec<i64> {
        self.state.refused.lock().unwrap().clone()
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most calls ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    async fn serve(&self, mut conn: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some(body) = read_request(&mut conn, &mut buf).await else {
                return;
            };
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let now = self.state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.state.peak.fetch_max(now, Ordering::SeqCst);
            let response = self.answer(&request).await;
            let Some(body) = response else {
                // Never answered: in flight until the caller gives up and closes.
                let mut sink = [0u8; 1024];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
                return;
            };
            self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// The answer to one request, after its latency and while the endpoint is
    /// not holding requests; `None`: this one is never answered.
    async fn answer(&self, request: &Value) -> Option<String> {
        let entries = request["Entries"].as_array().cloned().unwrap_or_default();
        let details: Vec<Value> = entries
            .iter()
            .map(|e| serde_json::from_str(e["Detail"].as_str().unwrap_or("{}")).unwrap_or_default())
            .collect();
        let ids: Vec<i64> = details
            .iter()
            .map(|d| d["eventId"].as_i64().unwrap_or(-1))
            .collect();
        let batches = details
            .iter()
            .map(|d| d["batchId"].as_str().unwrap_or_default().to_owned())
            .collect();
        let index = {
            let mut calls = self.state.calls.lock().unwrap();
            calls.push(Call {
                ids: ids.clone(),
                batches,
                arrived: self.state.clock.fetch_add(1, Ordering::SeqCst),
                answered: u64::MAX,
            });
            calls.len() - 1
        };
        if self.state.hang.load(Ordering::SeqCst) {
            self.state.hung.fetch_add(1, Ordering::SeqCst);
            self.state.arrived.notify_waiters();
            return None;
        }
        self.state.arrived.notify_waiters();
        let latency = *self.state.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut gate = self.gate.clone();
        if gate.wait_for(|open| *open).await.is_err() {
            return None;
        }
        let refuse = self.state.refuse.lock().unwrap().clone();
        let mut results = Vec::new();
        let mut failed = 0;
        for (i, id) in ids.iter().enumerate() {
            let refused = match &refuse {
                Refuse::Nothing => false,
                Refuse::EveryOther => i % 2 == 1,
                Refuse::Ids(set) => set.contains(id),
                Refuse::All => true,
            };
            if refused {
                failed += 1;
                self.state.refused.lock().unwrap().push(*id);
                results.push(
                    json!({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}),
                );
            } else {
                self.state.accepted.lock().unwrap().push(*id);
                results.push(json!({"EventId": format!("fake-{id}-{i}")}));
            }
        }
        self.state.calls.lock().unwrap()[index].answered =
            self.state.clock.fetch_add(1, Ordering::SeqCst);
        Some(json!({"FailedEntryCount": failed, "Entries": results}).to_string())
    }
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from `conn`;
/// `None` when the client closed the connection. `buf` carries bytes read
/// past the request into the next one.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(body)
}
