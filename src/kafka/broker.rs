//! The embedded broker: librdkafka's mock cluster, in this process, speaking the
//! real Kafka protocol on a loopback port.
//!
//! Its retention is bounded (librdkafka keeps about 5 MiB per partition), so the
//! observer must follow it live from the start.

use std::sync::Arc;

use eventscope_demo::kafka::{BrokerControl, KafkaSettings};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the embedded broker: {0}")]
    Start(#[from] rdkafka::error::KafkaError),
    #[error("the embedded broker did not start")]
    NoCluster,
}

/// The mock cluster lives as long as the client that created it.
pub struct EmbeddedBroker {
    client: BaseProducer,
    brokers: i32,
    bootstrap: String,
}

impl EmbeddedBroker {
    pub fn start(brokers: i32) -> Result<EmbeddedBroker, BrokerError> {
        let client: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .set("log_level", "3")
            .create()?;
        let bootstrap = client
            .client()
            .mock_cluster()
            .ok_or(BrokerError::NoCluster)?
            .bootstrap_servers();
        let broker = EmbeddedBroker {
            client,
            brokers,
            bootstrap,
        };
        // Consumer groups join at once instead of after the default 3 s.
        broker.with_raw(|raw| unsafe {
            rdkafka_sys::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        });
        Ok(broker)
    }

    /// `host:port` of the mock brokers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Client settings for this broker, with its controls.
    pub fn settings(self: &Arc<Self>) -> KafkaSettings {
        KafkaSettings {
            brokers: self.bootstrap.clone(),
            extra: vec![],
            control: Some(self.clone()),
        }
    }

    fn with_raw(&self, f: impl FnOnce(*mut rdkafka_sys::bindings::rd_kafka_mock_cluster_t)) {
        // SAFETY: the cluster belongs to `self.client`, which outlives this call.
        let raw = unsafe {
            rdkafka_sys::bindings::rd_kafka_handle_mock_cluster(self.client.client().native_ptr())
        };
        if !raw.is_null() {
            f(raw);
        }
    }

    /// Advertise `host:port` for every broker instead of its own listener
    /// (used when a proxy on a fixed port fronts the mock).
    pub fn advertise(&self, host: &str, port: u16) {
        let Ok(host) = std::ffi::CString::new(host) else {
            return;
        };
        self.with_raw(|raw| {
            for id in 1..=self.brokers {
                // SAFETY: valid cluster pointer and NUL-terminated host.
                unsafe {
                    rdkafka_sys::bindings::rd_kafka_mock_broker_set_host_port(
                        raw,
                        id,
                        host.as_ptr(),
                        i32::from(port),
                    );
                }
            }
        });
    }
}

impl BrokerControl for EmbeddedBroker {
    fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let cluster = self
            .client
            .client()
            .mock_cluster()
            .ok_or("the embedded broker is gone")?;
        cluster
            .create_topic(name, partitions, 1)
            .map_err(|e| e.to_string())
    }

    fn set_down(&self, down: bool) -> Result<(), String> {
        let cluster = self
            .client
            .client()
            .mock_cluster()
            .ok_or("the embedded broker is gone")?;
        for id in 1..=self.brokers {
            let r = if down {
                cluster.broker_down(id)
            } else {
                cluster.broker_up(id)
            };
            r.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
