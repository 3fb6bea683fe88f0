//! Commands: glue that composes the core and I/O modules. Nothing below reaches up here.

pub mod bundle;
pub mod by_source;
pub mod extract;
pub mod group;
pub mod locate;
pub mod ls;
pub mod plan;
pub mod prune;
pub mod recall_place;
pub mod redrive;
pub mod restore;
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

/// Runs the command on a new async runtime, stopping it on SIGINT or SIGTERM, and logs the
/// error it ends with. It lives here rather than in `main.rs` so that the futures of every
/// command are compiled once, with the library, instead of again into the binary (which took
/// 47 s of a cold release build).
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ERROR cannot start the async runtime: {e}");
            return ExitCode::WriteFailed;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = Shutdown::on_signals();
        let mut stopped = shutdown.clone();
        let command = execute(cli, shutdown);
        tokio::pin!(command);
        tokio::select! {
            result = &mut command => result,
            _ = stopped.requested() => {
                // The command cleans up (aborts its upload, removes staged files) and returns;
                // give it a few seconds, then leave anyway.
                match tokio::time::timeout(std::time::Duration::from_secs(10), &mut command).await {
                    // Finished (or failed) on its own while stopping: report that.
                    Ok(result) => result,
                    Err(_) => Err(crate::Error::Interrupted),
                }
            }
        }
    });
    let code = match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error}");
            error.exit_code()
        }
    };
    // Do not wait for detached blocking work (a parser mid-file) on the way out.
    runtime.shutdown_background();
    code
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
        Command::Restore(args) => restore::run(&cli.aws, &config, &args, shutdown).await,
        Command::Verify(args) => verify::run(&cli.aws, &config, &args).await,
        Command::Prune(args) => prune::run(&cli.aws, &config, &args, shutdown).await,
        Command::Redrive(args) => redrive::run(&cli.aws, &config, &args).await,
        Command::Locate(args) => locate::run(&cli.aws, &config, &args).await,
        Command::Ls(args) => ls::run(&cli.aws, &config, &args).await,
    }
}
