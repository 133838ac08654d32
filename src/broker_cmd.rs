//! `eventscope broker`: the embedded broker alone, on a fixed loopback port.

use std::sync::Arc;

use anyhow::Context;

use crate::cli::BrokerArgs;
use crate::kafka::broker::EmbeddedBroker;
use crate::kafka::proxy;

pub async fn run(args: BrokerArgs) -> anyhow::Result<i32> {
    let broker = Arc::new(EmbeddedBroker::start(1)?);
    let fronted = proxy::front(broker, args.port, args.partitions)
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let port = fronted.addr.port();
    println!("127.0.0.1:{port}");
    eprintln!(
        "eventscope broker: Kafka protocol on 127.0.0.1:{port} (librdkafka mock cluster); topics are created on first use with {} partitions; retention is about 5 MiB per partition. Ctrl-C stops.",
        args.partitions
    );
    tokio::select! {
        r = fronted.task => r.context("proxy")?.context("proxy")?,
        _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
    }
    Ok(0)
}
