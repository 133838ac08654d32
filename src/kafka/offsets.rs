//! End offsets of many partitions in one round trip: a ListOffsets (latest) for every
//! partition at once. Asking partition by partition costs a round trip each before `inspect`
//! reads its first record (on loopback half a millisecond each; across a network, 64
//! partitions take 64 round trips).

use std::collections::HashMap;
use std::time::Duration;

use eventscope_demo::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// The high watermark (next offset to be written) of every partition of `topics` that exists.
/// A partition the batched answer leaves unclear is asked alone.
pub fn high_watermarks(
    settings: &KafkaSettings,
    topics: &[String],
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let consumer: BaseConsumer = settings.base().create()?;
    let md = consumer.fetch_metadata(None, timeout)?;
    let mut latest = TopicPartitionList::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()))
    {
        for p in t.partitions() {
            latest.add_partition_offset(t.name(), p.id(), Offset::End)?;
        }
    }
    let mut out = HashMap::new();
    if latest.count() == 0 {
        return Ok(out);
    }
    let got = consumer.offsets_for_times(latest, timeout)?;
    for e in got.elements() {
        let high = match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(o)) if o >= 0 => o,
            _ => {
                consumer
                    .fetch_watermarks(e.topic(), e.partition(), timeout)?
                    .1
            }
        };
        out.insert((e.topic().to_owned(), e.partition()), high);
    }
    Ok(out)
}
