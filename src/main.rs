//! eventscope: a debugger for event-driven systems on Kafka.

use std::process::ExitCode;

use clap::Parser;

use eventscope::backend::Mode;
use eventscope::cli::{Cli, Command};

fn exit(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("eventscope: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,eventscope=info,librdkafka=off")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The window must own the main thread; the backend runs its own runtime.
    // Without a subcommand it runs the demo on the embedded broker and only
    // observes a user's Kafka (--brokers); `demo` runs the demo wherever it is.
    match cli.command {
        None => {
            let mode = Mode::default_for(&cli.conn);
            return exit(eventscope::gui::run(cli.conn, mode, None, Vec::new()).map(|()| 0));
        }
        Some(Command::Demo(args)) if !args.headless => {
            let startup = eventscope::gui::startup_commands(&args);
            return exit(eventscope::gui::run(cli.conn, Mode::Demo, None, startup).map(|()| 0));
        }
        Some(Command::Import(args)) if args.gui => {
            let loaded = eventscope::inspect::load_for(&cli.conn, &args.file);
            let model = match loaded {
                Ok(m) => m,
                Err(e) => return exit(Err(e)),
            };
            let label = args.file.display().to_string();
            return exit(
                eventscope::gui::run(cli.conn, Mode::Demo, Some((model, label)), Vec::new())
                    .map(|()| 0),
            );
        }
        Some(Command::Import(args)) => return exit(eventscope::inspect::import(&cli.conn, &args)),
        Some(Command::Schema(cmd)) => return exit(eventscope::schema_cmd::run(&cmd)),
        _ => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return exit(Err(anyhow::anyhow!("cannot start the async runtime: {e}"))),
    };
    exit(runtime.block_on(async move {
        match cli.command {
            Some(Command::Demo(args)) => eventscope::headless::run(cli.conn, args).await,
            Some(Command::Broker(args)) => eventscope::broker_cmd::run(args).await,
            Some(Command::Inspect(args)) => eventscope::inspect::inspect(cli.conn, args).await,
            Some(Command::Import(_)) | Some(Command::Schema(_)) | None => Ok(0),
        }
    }))
}
