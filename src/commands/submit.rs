//! `submit`: one ECS task of the grouper task definition per inventory manifest, its container
//! command replaced with `group <group options> -m URI`.

use std::io::Read;
use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;
use tracing::error;

use crate::cli::Cli;
use crate::ecs::{Ecs, Placement};
use crate::error::{Error, ExitCode, Result};
use crate::s3uri::S3Uri;

/// `s3bundler submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The ECS cluster to run the tasks in.
    #[arg(long)]
    pub cluster: String,
    /// The grouper task definition.
    #[arg(long, value_name = "FAMILY[:REV]|ARN")]
    pub task_definition: String,
    /// Inventory manifest URIs, one per line (`#` comments and blank lines are skipped);
    /// `-` or absent: standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE|-")]
    pub file: Option<PathBuf>,
    /// Launch type of the tasks.
    #[arg(long, value_parser = ["EC2", "FARGATE", "EXTERNAL"], conflicts_with = "capacity_provider")]
    pub launch_type: Option<String>,
    /// Capacity provider to run the tasks on (e.g. FARGATE_SPOT or the stack's spot provider).
    #[arg(long, value_name = "NAME")]
    pub capacity_provider: Option<String>,
    /// Subnets for awsvpc networking (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "SUBNET")]
    pub subnets: Vec<String>,
    /// Security groups for awsvpc networking (comma-separated or repeated).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "GROUP",
        requires = "subnets"
    )]
    pub security_groups: Vec<String>,
    /// Give the tasks a public IP (Fargate in public subnets without a NAT gateway).
    #[arg(long, requires = "subnets")]
    pub assign_public_ip: bool,
    /// The container whose command is replaced (default: the task definition's first).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Options for `group`, after `--` (e.g. `-- -b MANIFEST_BUCKET -p manifests -c 65000`).
    #[arg(last = true, value_name = "GROUP OPTIONS")]
    pub group_options: Vec<String>,
}

/// What `submit` did.
#[derive(Debug, Default, Serialize)]
pub struct SubmitReport {
    pub submitted: Vec<Submitted>,
    pub failed: Vec<Refused>,
}

#[derive(Debug, Serialize)]
pub struct Submitted {
    pub manifest: String,
    pub task_arn: String,
}

#[derive(Debug, Serialize)]
pub struct Refused {
    pub line: usize,
    pub manifest: String,
    pub error: String,
}

/// The manifest URIs of a list, with their line numbers; a line that is not an `s3://` URI of
/// an object is an error of that line alone.
pub fn manifest_lines(text: &str) -> Vec<(usize, std::result::Result<S3Uri, String>)> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| {
            let uri = line
                .parse::<S3Uri>()
                .and_then(|uri| match uri.key.is_empty() {
                    true => Err(format!("{line} names a bucket, not a manifest.json")),
                    false => Ok(uri),
                });
            (n, uri)
        })
        .collect()
}

/// The container command of one grouper task.
pub fn group_command(group_options: &[String], manifest: &S3Uri) -> Vec<String> {
    let mut command = vec!["group".to_string()];
    command.extend(group_options.iter().cloned());
    command.extend(["-m".to_string(), manifest.to_string()]);
    command
}

/// Refuses group options that the task would reject, before any task is started.
fn check_group_options(group_options: &[String]) -> Result<()> {
    if group_options
        .iter()
        .any(|o| o == "-m" || o == "--manifest" || o.starts_with("--manifest="))
    {
        return Err(Error::Usage(
            "submit gives each task its own -m; leave -m out of the group options".into(),
        ));
    }
    let probe = group_command(group_options, &S3Uri::new("probe", "manifest.json"));
    Cli::try_parse_from(std::iter::once("s3bundler".to_string()).chain(probe))
        .map(drop)
        .map_err(|e| Error::Usage(format!("the group options after -- are not valid: {e}")))
}

fn read_list(file: Option<&PathBuf>) -> Result<String> {
    let mut text = String::new();
    let (location, read) = match file {
        Some(path) if path.as_os_str() != "-" => (
            path.display().to_string(),
            std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)),
        ),
        _ => (
            "standard input".to_string(),
            std::io::stdin().read_to_string(&mut text),
        ),
    };
    read.map_err(|source| Error::Io { location, source })?;
    Ok(text)
}

pub async fn run(ecs: &Ecs, args: &SubmitArgs) -> Result<ExitCode> {
    check_group_options(&args.group_options)?;
    let list = read_list(args.file.as_ref())?;
    let container = match &args.container {
        Some(name) => name.clone(),
        None => ecs.first_container(&args.task_definition).await?,
    };
    let placement = Placement {
        cluster: args.cluster.clone(),
        task_definition: args.task_definition.clone(),
        launch_type: args.launch_type.clone(),
        capacity_provider: args.capacity_provider.clone(),
        subnets: args.subnets.clone(),
        security_groups: args.security_groups.clone(),
        assign_public_ip: args.assign_public_ip,
    };
    let mut report = SubmitReport::default();
    for (line, uri) in manifest_lines(&list) {
        let started = match uri {
            Ok(uri) => {
                let command = group_command(&args.group_options, &uri);
                ecs.run_task(&placement, &container, command, "s3bundler-submit")
                    .await
                    .map(|arn| (uri.to_string(), arn))
                    .map_err(|e| (uri.to_string(), e))
            }
            Err(e) => Err((String::new(), e)),
        };
        match started {
            Ok((manifest, task_arn)) => {
                if !args.json {
                    println!("{manifest}\t{task_arn}");
                }
                report.submitted.push(Submitted { manifest, task_arn });
            }
            Err((manifest, reason)) => {
                error!("line {line} ({manifest}): no task started: {reason}");
                report.failed.push(Refused {
                    line,
                    manifest,
                    error: reason,
                });
            }
        }
    }
    if args.json {
        super::print_json(&report);
    } else {
        println!(
            "submitted {} task(s), {} failed",
            report.submitted.len(),
            report.failed.len()
        );
    }
    Ok(if report.failed.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Partial
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_skip_comments_and_report_bad_lines_by_number() {
        let lines = manifest_lines(
            "# inventories\ns3://inv/a/manifest.json\n\n  s3://inv/b/manifest.json  \nnot-a-uri\ns3://bucket-only\n",
        );
        let lines: Vec<(usize, bool)> = lines.iter().map(|(n, r)| (*n, r.is_ok())).collect();
        assert_eq!(lines, vec![(2, true), (4, true), (5, false), (6, false)]);
    }

    #[test]
    fn the_task_runs_group_with_the_options_and_its_manifest() {
        let options = [
            "-b".to_string(),
            "mb".to_string(),
            "-c".to_string(),
            "100".to_string(),
        ];
        assert_eq!(
            group_command(&options, &S3Uri::new("inv", "x/manifest.json")),
            [
                "group",
                "-b",
                "mb",
                "-c",
                "100",
                "-m",
                "s3://inv/x/manifest.json"
            ]
        );
    }

    #[test]
    fn group_options_are_checked_before_any_task_starts() {
        let ok = ["-b", "mb", "-p", "manifests"].map(String::from);
        assert!(check_group_options(&ok).is_ok());
        let typo = ["-b", "mb", "--countt", "5"].map(String::from);
        assert!(matches!(check_group_options(&typo), Err(Error::Usage(_))));
        let with_m = ["-b", "mb", "-m", "s3://x/y"].map(String::from);
        assert!(matches!(check_group_options(&with_m), Err(Error::Usage(m)) if m.contains("-m")));
    }
}
