//! Logs go to stderr: human-readable on a terminal, JSON lines otherwise, so CloudWatch metric
//! filters can count `begin processing`, `successfully archived` and `ERROR` lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

/// Logging options every command shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogOptions {
    /// More detail: debug messages from s3bundler.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// Everything, including the AWS SDK's own debug messages.
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

impl LogOptions {
    /// The filter: RUST_LOG wins when set.
    fn filter(&self) -> EnvFilter {
        if let Ok(filter) = EnvFilter::try_from_env("RUST_LOG") {
            return filter;
        }
        let directives = if self.debug {
            "debug"
        } else if self.verbose {
            "warn,s3bundler=debug"
        } else {
            "warn,s3bundler=info"
        };
        EnvFilter::new(directives)
    }

    /// Installs the global subscriber. Calling it twice keeps the first.
    pub fn init(&self) {
        let terminal = std::io::stderr().is_terminal();
        let json = match self.log_format {
            LogFormat::Auto => !terminal,
            LogFormat::Text => false,
            LogFormat::Json => true,
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.filter())
            .with_writer(std::io::stderr);
        let _ = if json {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init()
        } else {
            builder.with_ansi(terminal).with_target(false).try_init()
        };
    }
}
