//! Logs go to stderr: human-readable text, or JSON lines where a log collector reads them (an
//! ECS task, or `--log-format json`), so that CloudWatch metric filters can count
//! `begin processing` and `successfully archived` lines and `level` ERROR.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Set by the ECS agent in every task's containers: logs there go to CloudWatch as JSON.
const ECS_METADATA: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON lines in an ECS task (`ECS_CONTAINER_METADATA_URI_V4` set), text otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

impl LogFormat {
    /// Whether lines are JSON, in an ECS task or not.
    fn json_lines(self, in_ecs: bool) -> bool {
        match self {
            LogFormat::Auto => in_ecs,
            LogFormat::Text => false,
            LogFormat::Json => true,
        }
    }
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
        let json = self
            .log_format
            .json_lines(std::env::var_os(ECS_METADATA).is_some());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_text_unless_asked_or_in_an_ecs_task() {
        assert!(!LogFormat::Auto.json_lines(false));
        assert!(LogFormat::Auto.json_lines(true));
        assert!(!LogFormat::Text.json_lines(true));
        assert!(LogFormat::Json.json_lines(false));
    }
}
