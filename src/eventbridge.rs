//! The EventBridge adapter of the outbox port ([`crate::outbox::EventSink`]):
//! one `PutEvents` call per ≤ 10 events on `EVENT_BUS_NAME`, `Source` =
//! `EVENT_SOURCE`, `DetailType` = the event type, `Detail` = the event
//! (behaviour §10). The client is built on first use, from the shared SDK
//! configuration ([`crate::aws::config`]), so `AWS_ENDPOINT_URL` reaches a
//! local EventBridge in tests and init stays free of AWS calls.
//!
//! Every call is bounded (`PUBLISH_CALL_TIMEOUT_MS`): an operation timeout
//! for the whole call, its one retry included, and half of it for each
//! attempt — so a hung endpoint costs seconds, and the outbox gets a failed
//! call it can give the rows back from, instead of an invocation spent waiting.

use std::time::Duration;

use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::config::timeout::TimeoutConfig;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use tokio::sync::OnceCell;

use crate::outbox::{EntryOutcome, EventSink, OutboxEvent, SendResult, SinkError};

/// EventBridge refuses an entry over 256 KB (its `Source`, `DetailType`,
/// `Detail`, `Resources` and `EventBusName`, as UTF-8 bytes).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

pub struct EventBridgeSink {
    bus: String,
    source: String,
    endpoint: Option<String>,
    call_timeout: Duration,
    client: OnceCell<aws_sdk_eventbridge::Client>,
}

impl EventBridgeSink {
    /// `endpoint` overrides the SDK's endpoint (`AWS_ENDPOINT_URL_EVENTBRIDGE`);
    /// `call_timeout` bounds every call (`PUBLISH_CALL_TIMEOUT_MS`).
    pub fn new(
        bus: impl Into<String>,
        source: impl Into<String>,
        endpoint: Option<String>,
        call_timeout: Duration,
    ) -> Self {
        EventBridgeSink {
            bus: bus.into(),
            source: source.into(),
            endpoint,
            call_timeout,
            client: OnceCell::new(),
        }
    }

    /// The whole call within `call_timeout`, each of its two attempts within
    /// half of it, connecting within that too (and never longer than 3 s).
    pub fn timeouts(call_timeout: Duration) -> TimeoutConfig {
        let attempt = call_timeout / 2;
        TimeoutConfig::builder()
            .connect_timeout(attempt.min(Duration::from_secs(3)))
            .operation_attempt_timeout(attempt)
            .operation_timeout(call_timeout)
            .build()
    }

    async fn client(&self) -> &aws_sdk_eventbridge::Client {
        self.client
            .get_or_init(|| async {
                // One retry inside the call; a later run retries the rest, so a
                // throttled bus is not hammered within one invocation.
                let mut config =
                    aws_sdk_eventbridge::config::Builder::from(crate::aws::config().await)
                        .retry_config(RetryConfig::standard().with_max_attempts(2))
                        .timeout_config(Self::timeouts(self.call_timeout));
                if let Some(url) = &self.endpoint {
                    config = config.endpoint_url(url);
                }
                aws_sdk_eventbridge::Client::from_conf(config.build())
            })
            .await
    }

    fn entry_size(&self, event: &OutboxEvent, detail: &str) -> usize {
        self.source.len() + event.event_type.len() + detail.len() + self.bus.len()
    }
}

impl EventSink for EventBridgeSink {
    fn send<'a>(&'a self, events: &'a [OutboxEvent]) -> SendResult<'a> {
        Box::pin(async move {
            let mut outcomes: Vec<Option<EntryOutcome>> = vec![None; events.len()];
            let mut entries = Vec::new();
            let mut sent = Vec::new();
            for (i, event) in events.iter().enumerate() {
                let detail = event.detail.to_string();
                let size = self.entry_size(event, &detail);
                if size > MAX_ENTRY_BYTES {
                    outcomes[i] = Some(EntryOutcome::Undeliverable(format!(
                        "the entry is {size} bytes; EventBridge accepts at most {MAX_ENTRY_BYTES}"
                    )));
                    continue;
                }
                entries.push(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(&self.source)
                        .detail_type(&event.event_type)
                        .detail(detail)
                        .build(),
                );
                sent.push(i);
            }
            if !entries.is_empty() {
                let answer = self
                    .client()
                    .await
                    .put_events()
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| {
                        SinkError(format!(
                            "PutEvents failed: {}",
                            aws_sdk_eventbridge::error::DisplayErrorContext(&e)
                        ))
                    })?;
                let results = answer.entries();
                for (n, &i) in sent.iter().enumerate() {
                    // Result entries are in request order; a missing one is not known accepted.
                    outcomes[i] = Some(match results.get(n) {
                        Some(r) if r.error_code().is_none() && r.event_id().is_some() => {
                            EntryOutcome::Accepted
                        }
                        Some(r) => {
                            EntryOutcome::Retry(r.error_code().unwrap_or("no event id").to_owned())
                        }
                        None => EntryOutcome::Retry("no result entry".into()),
                    });
                }
            }
            Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or(EntryOutcome::Retry("not sent".into())))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_bounded_and_each_attempt_by_half() {
        let t = EventBridgeSink::timeouts(Duration::from_millis(5000));
        assert_eq!(t.operation_timeout(), Some(Duration::from_millis(5000)));
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(2500)));
        let long = EventBridgeSink::timeouts(Duration::from_secs(60));
        assert_eq!(long.connect_timeout(), Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn the_shared_sdk_configuration_bounds_every_call() {
        let t = crate::aws::config()
            .await
            .timeout_config()
            .cloned()
            .expect("a timeout configuration");
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(t.connect_timeout(), Some(Duration::from_secs(3)));
    }
}
