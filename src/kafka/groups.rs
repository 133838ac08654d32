//! Consumer groups on the observed cluster: which there are, and what they
//! have committed. Offsets are read with OffsetFetch through a consumer that
//! carries the group's id but never subscribes or joins, so nobody's group
//! rebalances because eventscope looked.

use std::time::Duration;

use eventscope_demo::kafka::{side_by_side, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::model::groups::GroupSample;

/// The cluster's consumer groups (ListGroups). librdkafka's mock cluster does
/// not answer it: an error there, and the caller uses the groups it knows.
pub fn discover(settings: &KafkaSettings, timeout: Duration) -> Result<Vec<String>, String> {
    let consumer: BaseConsumer = settings.base().create().map_err(|e| e.to_string())?;
    let list = consumer
        .fetch_group_list(None, timeout)
        .map_err(|e| format!("cannot list consumer groups: {e}"))?;
    let mut groups: Vec<String> = list
        .groups()
        .iter()
        .filter(|g| g.protocol_type() == "consumer" || g.protocol_type().is_empty())
        .map(|g| g.name().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// Each group's committed offset on every partition of `topics` it has committed on, with the
/// partitions' high watermarks. A group that committed nothing there is left out.
pub fn sample(
    settings: &KafkaSettings,
    groups: &[String],
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<GroupSample>, String> {
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let highs = settings
        .high_watermarks(&refs, timeout)
        .map_err(|e| e.to_string())?;
    let at_ms = chrono::Utc::now().timestamp_millis();
    // One OffsetFetch client per group, side by side: a sample of the demo's
    // six groups takes about one round trip, not six.
    let mut out = Vec::new();
    for got in side_by_side(groups, |group| {
        sample_one(settings, group, &highs, at_ms, timeout)
    }) {
        out.extend(got.unwrap_or_else(|| Err("the offset fetch panicked".to_owned()))?);
    }
    Ok(out)
}

/// One group's committed offsets against `highs`; None when it committed on none of them.
fn sample_one(
    settings: &KafkaSettings,
    group: &str,
    highs: &std::collections::HashMap<(String, i32), i64>,
    at_ms: i64,
    timeout: Duration,
) -> Result<Option<GroupSample>, String> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in highs.keys() {
        tpl.add_partition(t, *p);
    }
    let committed = settings
        .committed(group, tpl, timeout)
        .map_err(|e| format!("group {group}: {e}"))?;
    let mut partitions: Vec<(String, i32, Option<i64>, i64)> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => {
                let high = highs
                    .get(&(e.topic().to_owned(), e.partition()))
                    .copied()
                    .unwrap_or(o);
                Some((e.topic().to_owned(), e.partition(), Some(o), high))
            }
            _ => None,
        })
        .collect();
    if partitions.is_empty() {
        return Ok(None);
    }
    partitions.sort();
    Ok(Some(GroupSample {
        group: group.to_owned(),
        partitions,
        at_ms,
    }))
}

/// Sample the groups' committed offsets every second until aborted or the
/// receiver is gone (a failed sample is said once and skipped).
pub async fn sample_every_second(
    settings: KafkaSettings,
    groups: Vec<String>,
    topics: Vec<String>,
    tx: tokio::sync::mpsc::Sender<Vec<GroupSample>>,
) {
    let mut complained = false;
    loop {
        let (s, g, t) = (settings.clone(), groups.clone(), topics.clone());
        let got =
            tokio::task::spawn_blocking(move || sample(&s, &g, &t, Duration::from_secs(3))).await;
        let sent = match got {
            Ok(Ok(samples)) => tx.send(samples).await.is_ok(),
            Ok(Err(e)) => {
                if !complained {
                    complained = true;
                    eprintln!("consumer groups: {e}");
                }
                true
            }
            Err(_) => true,
        };
        if !sent {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
