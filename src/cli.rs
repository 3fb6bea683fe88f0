//! The command line: common options and one subcommand per job.

use clap::{Parser, Subcommand};

use crate::aws::AwsOptions;
use crate::commands::bundle::BundleArgs;
use crate::commands::extract::{CatArgs, ExtractArgs};
use crate::commands::group::GroupArgs;
use crate::commands::locate::LocateArgs;
use crate::commands::ls::LsArgs;
use crate::commands::plan::PlanArgs;
use crate::commands::prune::PruneArgs;
use crate::commands::redrive::RedriveArgs;
use crate::commands::restore::RestoreArgs;
use crate::commands::run::RunArgs;
use crate::commands::submit::SubmitArgs;
use crate::commands::verify::VerifyArgs;
use crate::logging::LogOptions;

/// Bundle small S3 objects into tar archives with an index, from an S3 Inventory report.
#[derive(Debug, Parser)]
#[command(name = "s3bundler", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub aws: AwsOptions,
    #[command(flatten)]
    pub log: LogOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read an S3 Inventory report and write bundle manifests to S3.
    Group(GroupArgs),
    /// Archive the objects of a bundle manifest into a tar with an index.
    Bundle(BundleArgs),
    /// Group an inventory and bundle every manifest in one process; resumes where it stopped.
    Run(RunArgs),
    /// Print what bundling an inventory would produce, request, cost and save; writes nothing.
    Plan(PlanArgs),
    /// Start one ECS task of the grouper task definition per inventory manifest.
    Submit(SubmitArgs),
    /// Restore objects from an archive to S3 (with their content headers, metadata and tags) or
    /// to a local folder.
    Extract(ExtractArgs),
    /// Write one archived object's bytes to stdout.
    Cat(CatArgs),
    /// Request restores of archives in GLACIER, DEEP_ARCHIVE or an Intelligent-Tiering archive
    /// tier, so cat and extract can read them (a dry run with cost and time unless --yes);
    /// --status and --wait follow them.
    Restore(RestoreArgs),
    /// Check that every object of the bundle manifests under a prefix is archived, copied or
    /// in a DLQ, exactly once, and that indexes agree with their archives.
    Verify(VerifyArgs),
    /// Delete the original objects that verification proves archived and unchanged since
    /// (a dry run unless --yes).
    Prune(PruneArgs),
    /// Put the retryable DLQ rows of the bundle manifests under a prefix into new bundle
    /// manifests, to be bundled into new archives (a dry run unless --yes).
    Redrive(RedriveArgs),
    /// Find where an object of a source bucket was archived (archive, member, offsets, class),
    /// from the catalog beside the manifests; exit 1 when it is not archived.
    Locate(LocateArgs),
    /// List an archive's objects from its index (the archive itself is not read).
    Ls(LsArgs),
}
