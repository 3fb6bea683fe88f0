//! The `s3bundler` binary: parse the command line, run the command, map the outcome to an exit code.

use clap::Parser;
use s3bundler::cli::Cli;
use s3bundler::{Error, ExitCode};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ERROR cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::WriteFailed.code() as u8);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = s3bundler::commands::execute(cli) => result,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        }
    });
    let code = match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("ERROR {error}");
            error.exit_code()
        }
    };
    // Do not wait for detached blocking work (a parser mid-file) on the way out.
    runtime.shutdown_background();
    std::process::ExitCode::from(code.code() as u8)
}
