//! Consumer groups on the observed cluster: which there are, and what they
//! have committed. Offsets are read with OffsetFetch through a consumer that
//! carries the group's id but never subscribes or joins, so nobody's group
//! rebalances because eventscope looked.

use std::time::Duration;

use eventscope_demo::kafka::KafkaSettings;
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
    let mut out = Vec::new();
    for group in groups {
        let mut c = settings.base();
        c.set("group.id", group).set("enable.auto.commit", "false");
        let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in highs.keys() {
            tpl.add_partition(t, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, timeout)
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
            continue;
        }
        partitions.sort();
        out.push(GroupSample {
            group: group.clone(),
            partitions,
            at_ms,
        });
    }
    Ok(out)
}
