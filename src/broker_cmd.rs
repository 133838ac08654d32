//! `eventscope broker`: the embedded broker alone, on a fixed loopback port.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cli::BrokerArgs;
use crate::kafka::broker::EmbeddedBroker;
use crate::kafka::proxy;

pub async fn run(args: BrokerArgs) -> anyhow::Result<i32> {
    let broker = Arc::new(EmbeddedBroker::start(1)?);
    let upstream = broker
        .bootstrap()
        .split(',')
        .next()
        .and_then(|a| a.parse().ok())
        .context("the embedded broker has no usable address")?;
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    broker.advertise("127.0.0.1", port);
    println!("127.0.0.1:{port}");
    eprintln!(
        "eventscope broker: Kafka protocol on 127.0.0.1:{port} (librdkafka mock cluster); topics are created on first use with {} partitions; retention is about 5 MiB per partition. Ctrl-C stops.",
        args.partitions
    );
    let control: Arc<dyn eventscope_demo::kafka::BrokerControl> = broker.clone();
    tokio::select! {
        r = proxy::serve(listener, upstream, control, args.partitions) => r.context("proxy")?,
        _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
    }
    Ok(0)
}
