//! eventscope: a debugger for event-driven systems on Kafka.

use std::process::ExitCode;

use clap::Parser;

use eventscope::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,eventscope=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eventscope: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Demo(args)) if args.headless => eventscope::headless::run(cli.conn, args).await,
            Some(Command::Demo(_)) => {
                eprintln!("eventscope: the demo without --headless runs inside the GUI: start `eventscope`");
                Ok(2)
            }
            Some(Command::Broker(args)) => eventscope::broker_cmd::run(args).await,
            None => {
                eprintln!("eventscope: the GUI is not built yet; try `eventscope demo --headless --orders 100`");
                Ok(2)
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("eventscope: {e:#}");
            ExitCode::from(1)
        }
    }
}
