//! The state store as a subscriber: every event of a run is written to its deployment's
//! `events`, in order, without making the engine wait on the database.

use crate::events::{Event, Subscriber};
use crate::state::Store;
use std::sync::Mutex;
use tokio::sync::mpsc;

pub struct StoreRecorder {
    sender: Mutex<Option<mpsc::UnboundedSender<serde_json::Value>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StoreRecorder {
    pub fn start(store: Store, deployment_id: String) -> StoreRecorder {
        let (sender, mut receiver) = mpsc::unbounded_channel::<serde_json::Value>();
        let task = tokio::spawn(async move {
            while let Some(payload) = receiver.recv().await {
                let kind = payload["type"].as_str().unwrap_or("event").to_string();
                if let Err(e) = store.record_event(&deployment_id, &kind, &payload).await {
                    tracing::warn!("could not record event {kind}: {e:#}");
                }
            }
        });
        StoreRecorder { sender: Mutex::new(Some(sender)), task: Mutex::new(Some(task)) }
    }

    /// Wait until every event emitted so far is written.
    pub async fn flush(&self) {
        self.sender.lock().unwrap().take();
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Subscriber for StoreRecorder {
    fn event(&self, event: &Event) {
        if let Some(sender) = self.sender.lock().unwrap().as_ref()
            && let Ok(value) = serde_json::to_value(event)
        {
            let _ = sender.send(value);
        }
    }
}
