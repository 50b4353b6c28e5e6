//! `eventbus-admin`: manage eventbus-broker — or RabbitMQ — through the
//! management HTTP API, like `rabbitmqadmin`.
//!
//! ```text
//! eventbus-admin list queues
//! eventbus-admin --vhost orders declare queue --name invoices --argument x-max-length=1000
//! eventbus-admin publish --routing-key invoices --payload '{"id":1}' --property content_type=application/json
//! eventbus-admin --format json get --queue invoices --count 10
//! ```
//!
//! # Layout
//! - `cli`: the command line (clap).
//! - `client`: HTTP requests, URL encoding, errors with the server's `reason`.
//! - `commands`: which endpoint each command calls and what it prints.
//! - `output`: tables and JSON.
//!
//! Exit codes: 0 ok, 1 API or usage error, 2 the server could not be reached.

mod cli;
mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` / `--version` print to stdout and succeed; usage errors exit 1, not clap's 2
            // (2 means "cannot connect").
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(text) => {
            commands::print(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
