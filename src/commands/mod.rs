//! Commands: glue that composes the core and I/O modules. Nothing below reaches up here.

pub mod bundle;
pub mod extract;
pub mod group;
pub mod plan;
pub mod prune;
pub mod run;
pub mod submit;
pub mod verify;
pub mod worker;

use crate::cli::{Cli, Command};
use crate::error::{ExitCode, Result};
use crate::shutdown::Shutdown;

/// Prints a summary as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(summary: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(summary).unwrap_or_default()
    );
}

/// `reason=n reason=n …`, or `none`.
fn counts_line<K: std::fmt::Display>(counts: &std::collections::BTreeMap<K, u64>) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    counts
        .iter()
        .map(|(what, n)| format!("{what}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the command the user asked for; the exit code tells how it went.
pub async fn execute(cli: Cli, shutdown: Shutdown) -> Result<ExitCode> {
    cli.aws.check()?;
    let config = cli.aws.load().await;
    match cli.command {
        Command::Group(args) => group::run(&cli.aws, &config, &args, shutdown)
            .await
            .map(|_| ExitCode::Success),
        Command::Bundle(args) => bundle::run(&cli.aws, &config, &args, shutdown).await,
        Command::Run(args) => run::run(&cli.aws, &config, &args, shutdown).await,
        Command::Submit(args) => submit::run(&cli.aws.ecs(&config), &args).await,
        Command::Plan(args) => plan::run(&cli.aws, &config, &args, shutdown).await,
        Command::Extract(args) => extract::run(&cli.aws, &config, &args, shutdown).await,
        Command::Cat(args) => extract::run_cat(&cli.aws, &config, &args).await,
        Command::Verify(args) => verify::run(&cli.aws, &config, &args).await,
        Command::Prune(args) => prune::run(&cli.aws, &config, &args, shutdown).await,
    }
}
