//! `extract`: restores members of an archive to S3 (content headers, metadata and tags) or to a
//! local folder (`user.s3.*` xattrs), never over an object or file that differs from the
//! archived one unless asked; and `cat`: one member's bytes to stdout.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use aws_config::SdkConfig;
use futures_util::future::Either;
use futures_util::{stream, StreamExt};

use super::recall_place::RecallPlace;
use crate::archive::layout::Compression;
use crate::archive::records::IndexRow;
use crate::aws::AwsOptions;
use crate::bundle::budget::ByteBudget;
use crate::error::{Error, ExitCode, Result};
use crate::extract::plan::{local_plan, version_runs, Identities, Member, Shared};
use crate::extract::{
    cat, member_cursor, path::local_path, restore, restore_in, s3_target, stream_cursor, Archive,
    Background, Cursor, Destination, Expect, Restored, Selection, Status, VersionRun, PART_SIZE,
};
use crate::s3::S3;
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::{human_bytes, ByteSize};

/// Tries of one member of an uncompressed archive when its body is cut or its GET keeps failing.
const MEMBER_ATTEMPTS: u32 = 5;

/// `s3bundler extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// The archive (`…/NAME.tar`, `.tar.gz` or `.tar.zst`); its index is read from beside it.
    /// With `--manifests` and `--archives`: the object as it was, `s3://SOURCE_BUCKET/KEY` (or
    /// `s3://SOURCE_BUCKET` with `--prefix`), found through the catalog.
    #[arg(value_name = "s3://ARCHIVE_BUCKET/…/NAME.tar")]
    pub archive: S3Uri,
    /// Restore this object (its key, as in the index); repeat for more. Default: every object.
    #[arg(short = 'k', long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Restore only objects whose key starts with this.
    #[arg(long = "prefix", value_name = "P")]
    pub prefix: Option<String>,
    /// Restore only this version (its archived version ID, as in the index); repeat for more.
    /// Without it, the versions of a key go to S3 one after another, oldest first (the newest
    /// ends current), and to a folder only the newest.
    #[arg(long = "version-id", value_name = "VERSION")]
    pub versions: Vec<String>,
    /// Restore to this bucket, under this key prefix (`s3://SOURCE` puts objects back where
    /// they were).
    #[arg(
        long = "to",
        value_name = "s3://BUCKET/PREFIX",
        conflicts_with = "directory",
        required_unless_present = "directory"
    )]
    pub to: Option<S3Uri>,
    /// Write files under this folder instead (member names `SOURCE/KEY`, as tar does).
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Replace objects or files that differ from the archived ones. Without it they are kept
    /// and listed, and extract exits 1.
    #[arg(long)]
    pub overwrite: bool,
    /// Members restored at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bytes of member data held in memory at most (a member larger than a part holds at most
    /// three parts' worth while it streams).
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub max_in_flight: ByteSize,
    /// Print the objects and the counts as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub place: RecallPlace,
}

/// `s3bundler cat`.
#[derive(Debug, Clone, clap::Args)]
pub struct CatArgs {
    /// The archive (`…/NAME.tar`); its index is read from beside it. With `--manifests` and
    /// `--archives` and no KEY: the object as it was, `s3://SOURCE_BUCKET/KEY`, found through
    /// the catalog.
    #[arg(value_name = "s3://ARCHIVE_BUCKET/…/NAME.tar | s3://SOURCE_BUCKET/KEY")]
    pub archive: S3Uri,
    /// The object's key, as in the index (with an archive URI).
    pub key: Option<String>,
    /// This version (its archived version ID); without it, the newest archived.
    #[arg(long = "version-id", value_name = "VERSION")]
    pub version_id: Option<String>,
    #[command(flatten)]
    pub place: RecallPlace,
}

/// Refused member names, or kept objects, listed; the others are counted.
const LISTED: usize = 20;

/// The first `listed` of `total` items, and how many more there are.
fn some_of(listed: &[String], total: usize) -> String {
    let more = total.saturating_sub(listed.len());
    if more > 0 {
        format!("{}; and {more} more", listed.join("; "))
    } else {
        listed.join("; ")
    }
}

/// Bytes a member may hold: its size, up to three parts (one filling, two uploading).
fn held(row: &IndexRow) -> u64 {
    row.size.min(3 * PART_SIZE as u64)
}

/// What one restore needs at hand.
struct Extraction<'a> {
    s3: &'a S3,
    archive: &'a Archive,
    selection: &'a Selection,
    destination: &'a Destination,
    budget: ByteBudget,
    progress: indicatif::ProgressBar,
    shutdown: &'a Shutdown,
}

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &ExtractArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    if args.place.manifests.is_some() || args.place.archives.is_some() {
        return super::by_source::extract(aws, config, args, shutdown).await;
    }
    extract_archive(aws, config, args, shutdown).await
}

/// `extract` of an archive URI.
async fn extract_archive(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &ExtractArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let destination = destination_of(args)?;
    let ready = ready_to_extract(&s3, args, &destination).await?;
    let mut report = Report::new(args.json);
    extract_ready(&s3, args, &destination, ready, &shutdown, &mut report).await;
    report.finish()
}

/// An archive checked before anything is written: readable, and its index planned.
pub(super) struct Ready {
    archive: Archive,
    selection: Selection,
    plan: Plan,
}

/// Checks the archive `args` names and plans what to write of it (see
/// [`check_before_writing`]), creating the destination folder.
pub(super) async fn ready_to_extract(
    s3: &S3,
    args: &ExtractArgs,
    destination: &Destination,
) -> Result<Ready> {
    let archive = Archive::at(&args.archive)?;
    let selection = Selection {
        keys: args.keys.clone(),
        prefix: args.prefix.clone(),
        versions: args.versions.clone(),
    };
    archive.check_readable(s3).await?;
    let plan = check_before_writing(s3, &archive, &selection, destination).await?;
    prepare(destination)?;
    Ok(Ready {
        archive,
        selection,
        plan,
    })
}

/// Extracts an archive made ready, into `report`.
pub(super) async fn extract_ready(
    s3: &S3,
    args: &ExtractArgs,
    destination: &Destination,
    ready: Ready,
    shutdown: &Shutdown,
    report: &mut Report,
) {
    let Ready {
        archive,
        selection,
        plan,
    } = ready;
    let extraction = Extraction {
        s3,
        archive: &archive,
        selection: &selection,
        destination,
        budget: ByteBudget::new(args.max_in_flight.0.max(4 * PART_SIZE as u64)),
        progress: crate::progress::objects_bar(Some(plan.selected), "extracting"),
        shutdown,
    };
    extraction.progress.inc(plan.older.len() as u64);
    for older in plan.older {
        report.add(Ok(older));
    }
    let concurrency = args.concurrency.max(1);
    if archive.compression == Compression::None {
        extraction
            .by_member(&plan.set_aside, plan.runs, concurrency, report)
            .await;
    } else {
        // Each pass writes the due version of every run that passes by, so each pass moves
        // every unfinished run on by one version at least.
        let mut runs = plan.runs;
        let mut first = true;
        while (first || runs.iter().any(VersionRun::pending))
            && extraction
                .stream_pass(&plan.set_aside, &mut runs, first, concurrency, report)
                .await
        {
            first = false;
        }
    }
    extraction.progress.finish_and_clear();
}

/// Where `--to` or `-C` says to write.
pub(super) fn destination_of(args: &ExtractArgs) -> Result<Destination> {
    let overwrite = args.overwrite;
    match (&args.to, &args.directory) {
        (Some(to), _) => Ok(Destination::S3 {
            to: to.clone(),
            overwrite,
        }),
        (None, Some(dir)) => Ok(Destination::Local {
            dir: dir.clone(),
            overwrite,
        }),
        (None, None) => Err(Error::Usage(
            "give --to s3://BUCKET/PREFIX or -C DIR".into(),
        )),
    }
}

/// Creates the folder extracted files go to.
fn prepare(destination: &Destination) -> Result<()> {
    if let Destination::Local { dir, .. } = destination {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            location: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

impl Extraction<'_> {
    /// Uncompressed archives: one range GET per member, `concurrency` members at once; the
    /// index is read as members restore, a batch ahead of them. The versions of one key are
    /// one task, written one after another.
    async fn by_member(
        &self,
        set_aside: &HashSet<u64>,
        runs: Vec<VersionRun>,
        concurrency: usize,
        report: &mut Report,
    ) {
        let mut rows = match self.archive.index(self.s3).await {
            Ok(rows) => rows,
            Err(e) => return report.add(Err(e)),
        };
        let wanted = stream::unfold((&mut rows, 0u64), |(rows, ordinal)| async move {
            Some(((ordinal, rows.next().await?), (rows, ordinal + 1)))
        })
        .filter(|(ordinal, row)| {
            std::future::ready(!matches!(row, Ok(row)
                if !self.selection.wants(row) || set_aside.contains(ordinal)))
        });
        let singles = wanted.map(|(_, row)| {
            let stopping = self.shutdown.is_requested();
            Either::Left(async move {
                let row = match row {
                    Ok(_) if stopping => Err(Error::Interrupted),
                    row => row,
                };
                let restored = match row {
                    Ok(row) => self.member(&row, &Expect::Nothing).await,
                    Err(e) => Err(e),
                };
                self.progress.inc(1);
                vec![restored]
            })
        });
        let runs = stream::iter(runs).map(|run| Either::Right(self.run_by_member(run)));
        let restores = singles.chain(runs).buffer_unordered(concurrency);
        futures_util::pin_mut!(restores);
        while let Some(results) = restores.next().await {
            for result in results {
                report.add(result);
            }
        }
    }

    /// One member of an uncompressed archive; a body cut mid-member is read again (nothing of
    /// it was kept).
    async fn member(&self, row: &IndexRow, expect: &Expect) -> Result<Restored> {
        let _permit = self.budget.acquire(held(row)).await;
        let mut attempt = 1;
        loop {
            let result = match member_cursor(self.s3, self.archive, row).await {
                Ok(mut cursor) => {
                    restore(self.s3, &mut cursor, row, self.destination, expect).await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(Error::Remote { detail, .. }) if attempt < MEMBER_ATTEMPTS => {
                    tracing::debug!("{}: {detail}; reading it again", row.key);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The versions of one key from an uncompressed archive, oldest first; an error stops
    /// them.
    async fn run_by_member(&self, mut run: VersionRun) -> Vec<Result<Restored>> {
        let mut results = Vec::new();
        match run.begin(self.s3).await {
            Ok(settled) => results.extend(settled.into_iter().map(Ok)),
            Err(e) => results.push(Err(e)),
        }
        while let (Some((member, expect)), true) = (run.due(), results.iter().all(Result::is_ok)) {
            let (row, expect) = (member.row.clone(), expect.clone());
            let restored = if self.shutdown.is_requested() {
                Err(Error::Interrupted)
            } else {
                self.member(&row, &expect).await
            };
            let rest = restored
                .as_ref()
                .map(|r| run.advance(r))
                .unwrap_or_default();
            results.push(restored);
            results.extend(rest.into_iter().map(Ok));
        }
        self.progress.inc(run.members().len() as u64);
        results
    }

    /// One pass over the decompressed stream of a compressed archive; the members come in
    /// archive order. The first pass restores every member not set aside, small ones uploading
    /// in the background, `concurrency` at a time; every pass writes the due version of each
    /// run as it passes by. Returns false when the extraction stops (an error, a shutdown).
    async fn stream_pass(
        &self,
        set_aside: &HashSet<u64>,
        runs: &mut [VersionRun],
        first: bool,
        concurrency: usize,
        report: &mut Report,
    ) -> bool {
        let run_of: HashMap<u64, usize> = runs
            .iter()
            .enumerate()
            .flat_map(|(at, run)| run.members().iter().map(move |m| (m.ordinal, at)))
            .collect();
        let started = async {
            Ok::<_, Error>((
                self.archive.index(self.s3).await?,
                stream_cursor(self.s3, self.archive).await?,
            ))
        };
        let (mut rows, mut cursor) = match started.await {
            Ok(started) => started,
            Err(e) => {
                report.add(Err(e));
                return false;
            }
        };
        let mut uploads = Background::new();
        let mut going = true;
        let mut ordinal = 0u64;
        while let Some(row) = rows.next().await {
            let at = ordinal;
            ordinal += 1;
            let row = match row {
                Ok(row) if !self.selection.wants(&row) => continue,
                Ok(row) => row,
                Err(e) => {
                    report.add(Err(e));
                    going = false;
                    break;
                }
            };
            if self.shutdown.is_requested() {
                report.add(Err(Error::Interrupted));
                going = false;
                break;
            }
            let done = if let Some(run) = run_of.get(&at).and_then(|&i| runs.get_mut(i)) {
                self.version_passing_by(run, at, &row, &mut cursor, report)
                    .await
            } else if !first || set_aside.contains(&at) {
                continue;
            } else {
                // Background uploads hold at most one part each: bounded by their number.
                while uploads.len() >= concurrency
                    || (uploads.len() as u64 + 1) * PART_SIZE as u64 > self.budget.capacity()
                {
                    if let Some(joined) = uploads.join_next().await {
                        report.add(joined_result(joined));
                    }
                }
                self.progress.inc(1);
                let mut background = Some(&mut uploads);
                let (s3, destination) = (self.s3, self.destination);
                restore_in(
                    s3,
                    &mut cursor,
                    &row,
                    destination,
                    &Expect::Nothing,
                    &mut background,
                )
                .await
                .map(|restored| restored.into_iter().for_each(|r| report.add(Ok(r))))
            };
            if let Err(e) = done {
                report.add(Err(e));
                going = false;
                break;
            }
        }
        while let Some(joined) = uploads.join_next().await {
            report.add(joined_result(joined));
        }
        going
    }

    /// A version of a run passing by in the stream: written when it is the run's due one.
    async fn version_passing_by(
        &self,
        run: &mut VersionRun,
        at: u64,
        row: &IndexRow,
        cursor: &mut Cursor,
        report: &mut Report,
    ) -> Result<()> {
        let mut settled = Vec::new();
        if !run.begun() {
            settled = run.begin(self.s3).await?;
        }
        if let Some((_, expect)) = run.due().filter(|(member, _)| member.ordinal == at) {
            let expect = expect.clone();
            let restored = restore(self.s3, cursor, row, self.destination, &expect).await?;
            let rest = run.advance(&restored);
            settled.push(restored);
            settled.extend(rest);
        }
        self.progress.inc(settled.len() as u64);
        settled.into_iter().for_each(|r| report.add(Ok(r)));
        Ok(())
    }
}

/// What the index says before anything is written.
#[derive(Default)]
struct Plan {
    /// Members selected.
    selected: u64,
    /// Members not restored in the index's order, by position: versions of a key restored in
    /// a run, older versions not written to a folder.
    set_aside: HashSet<u64>,
    /// To S3: the versions of one key, oldest first.
    runs: Vec<VersionRun>,
    /// To a folder: the older versions not written.
    older: Vec<Restored>,
}

/// Reads the index before anything is written: refuses a key or version asked for that is not
/// in the index, and (to a folder) selected members whose name would leave it or that would
/// land on one path; finds the versions of one key. The members that share a target are read
/// a second time (see [`crate::extract::plan`]).
async fn check_before_writing(
    s3: &S3,
    archive: &Archive,
    selection: &Selection,
    destination: &Destination,
) -> Result<Plan> {
    let mut rows = archive.index(s3).await?;
    let mut found = selection.none_found();
    let (mut selected, mut refused) = (0u64, 0usize);
    let mut listed = Vec::new();
    let mut identities = Identities::default();
    while let Some(row) = rows.next().await {
        let row = row?;
        selection.mark_found(&row, &mut found);
        if !selection.wants(&row) {
            continue;
        }
        selected += 1;
        match destination {
            Destination::S3 { to, .. } => identities.add_key(&s3_target(to, &row).key),
            Destination::Local { .. } => match local_path(&row.member) {
                Ok(path) => identities.add_path(&path),
                Err(e) => {
                    refused += 1;
                    if listed.len() < LISTED {
                        listed.push(e.to_string());
                    }
                }
            },
        }
    }
    if let (Some(prefix), 0) = (&selection.prefix, selected) {
        tracing::warn!(
            "no object of {} has a key starting with {prefix:?}: nothing to extract (`s3bundler \
             ls {}` lists what it holds)",
            archive.uri,
            archive.uri
        );
    }
    let missing = selection.not_found(&found);
    if !missing.is_empty() {
        return Err(Error::bad_input(
            archive.index_uri.to_string(),
            format!(
                "no member for key or version {missing:?}; `s3bundler ls {}` lists what the \
                 archive holds",
                archive.uri
            ),
        ));
    }
    if let (Destination::Local { dir, .. }, true) = (destination, refused > 0) {
        return Err(Error::bad_input(
            archive.index_uri.to_string(),
            format!(
                "{refused} member names would leave {}, nothing was extracted: {}",
                dir.display(),
                some_of(&listed, refused)
            ),
        ));
    }
    let mut plan = Plan {
        selected,
        ..Plan::default()
    };
    let shared = identities.shared();
    if shared.is_empty() {
        return Ok(plan);
    }
    let members = sharing(s3, archive, selection, destination, &shared).await?;
    match destination {
        Destination::S3 { to, overwrite } => {
            for run in version_runs(members, |row| s3_target(to, row).key) {
                plan.set_aside.extend(run.iter().map(|m| m.ordinal));
                let target = s3_target(to, &run[0].row);
                plan.runs.push(VersionRun::new(run, target, *overwrite));
            }
        }
        Destination::Local { dir, .. } => {
            let local = local_plan(members, selection.versions.is_empty());
            if !local.collisions.is_empty() {
                let sets: Vec<String> = local
                    .collisions
                    .iter()
                    .take(LISTED)
                    .map(|c| {
                        let names: Vec<String> = c.names.iter().map(|n| format!("`{n}`")).collect();
                        format!("{} (at {})", names.join(", "), c.path.display())
                    })
                    .collect();
                return Err(Error::bad_input(
                    archive.index_uri.to_string(),
                    format!(
                        "{} sets of members would land on one path under {} (or a file would be a folder of another), nothing was extracted: {}; choose among them with --key, --prefix or --version-id, or extract them to S3",
                        local.collisions.len(),
                        dir.display(),
                        some_of(&sets, local.collisions.len())
                    ),
                ));
            }
            for (older, newest) in local.older {
                plan.set_aside.insert(older.ordinal);
                let path = local_path(&older.row.member)
                    .map(|p| dir.join(p.relative()))
                    .unwrap_or_else(|_| dir.clone());
                let why = format!(
                    "a folder gets the newest version of `{}` (archived version {}); choose one with --version-id",
                    older.row.key,
                    newest.row.version_id.as_deref().unwrap_or("-")
                );
                plan.older.push(
                    Restored::new(&older.row, path.display().to_string()).settled(
                        Status::OlderVersionNotWritten,
                        Some(why),
                        None,
                    ),
                );
            }
        }
    }
    Ok(plan)
}

/// The selected members whose target's fingerprint is `shared`, with their positions: a second
/// read of the index.
async fn sharing(
    s3: &S3,
    archive: &Archive,
    selection: &Selection,
    destination: &Destination,
    shared: &Shared,
) -> Result<Vec<Member>> {
    let mut rows = archive.index(s3).await?;
    let mut members = Vec::new();
    let mut ordinal = 0u64;
    while let Some(row) = rows.next().await {
        let (row, at) = (row?, ordinal);
        ordinal += 1;
        if !selection.wants(&row) {
            continue;
        }
        let meets = match destination {
            Destination::S3 { to, .. } => shared.involves_key(&s3_target(to, &row).key),
            Destination::Local { .. } => {
                local_path(&row.member).is_ok_and(|path| shared.involves_path(&path))
            }
        };
        if meets {
            members.push(Member { ordinal: at, row });
        }
    }
    Ok(members)
}

/// What `extract` prints: each object as it is done (in the order they finish; with
/// `--json`, elements of an array), then the counts; errors after the first are logged.
pub(super) struct Report {
    json: bool,
    printed: u64,
    restored: u64,
    bytes: u64,
    already_restored: u64,
    kept: u64,
    older: u64,
    /// The first kept objects, listed again at the end.
    kept_listed: Vec<String>,
    first_error: Option<Error>,
}

impl Report {
    pub(super) fn new(json: bool) -> Self {
        if json {
            print!("{{\"objects\":[");
        }
        Report {
            json,
            printed: 0,
            restored: 0,
            bytes: 0,
            already_restored: 0,
            kept: 0,
            older: 0,
            kept_listed: Vec::new(),
            first_error: None,
        }
    }

    pub(super) fn add(&mut self, result: Result<Restored>) {
        let restored = match result {
            Ok(restored) => restored,
            // The first error is the exit's (and logged by main); the others are logged here.
            Err(e) if self.first_error.is_none() => {
                self.first_error = Some(e);
                return;
            }
            Err(Error::Interrupted) => return,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let why = restored.why.as_deref().unwrap_or("");
        let outcome = match restored.status {
            Status::Restored => {
                self.restored += 1;
                self.bytes += restored.size;
                match &restored.new_version_id {
                    Some(version) => format!("restored as version {version}"),
                    None => "restored".to_string(),
                }
            }
            Status::AlreadyRestored => {
                self.already_restored += 1;
                "already restored (identical)".to_string()
            }
            Status::Kept => {
                self.kept += 1;
                if self.kept_listed.len() < LISTED {
                    self.kept_listed
                        .push(format!("{} ({why})", restored.target));
                }
                format!("kept: {why}")
            }
            Status::OlderVersionNotWritten => {
                self.older += 1;
                format!("not written: {why}")
            }
        };
        if self.json {
            let separator = if self.printed == 0 { "\n" } else { ",\n" };
            let element = serde_json::to_string(&restored).unwrap_or_default();
            print!("{separator}{element}");
        } else {
            let archived = match &restored.archived_version_id {
                Some(version) => format!("\tarchived version {version}"),
                None => String::new(),
            };
            println!(
                "{}\t{}{archived}\t{outcome}",
                restored.target, restored.size
            );
        }
        self.printed += 1;
    }

    pub(super) fn finish(self) -> Result<ExitCode> {
        if self.json {
            println!(
                "{}],\"restored\":{},\"already_restored\":{},\"kept\":{},\"older_versions_not_written\":{},\"bytes\":{}}}",
                if self.printed == 0 { "" } else { "\n" },
                self.restored,
                self.already_restored,
                self.kept,
                self.older,
                self.bytes
            );
        } else {
            let mut summary = format!(
                "restored {} objects ({})",
                self.restored,
                human_bytes(self.bytes)
            );
            if self.already_restored > 0 {
                summary += &format!("; {} already restored (identical)", self.already_restored);
            }
            if self.kept > 0 {
                summary += &format!(
                    "; {} kept because they differ from the archived ones: run again with --overwrite to replace them",
                    self.kept
                );
            }
            if self.older > 0 {
                summary += &format!(
                    "; {} older versions not written (a folder gets the newest version of each key): choose one with --version-id",
                    self.older
                );
            }
            println!("{summary}");
        }
        if self.kept > 0 {
            tracing::warn!(
                "kept {} objects that differ from the archived ones (or changed during the restore), nothing was written over them: {}; look at them, then run again with --overwrite to replace them",
                self.kept,
                some_of(&self.kept_listed, self.kept as usize)
            );
        }
        match self.first_error {
            Some(error) => Err(error),
            None if self.kept > 0 => Ok(ExitCode::Partial),
            None => Ok(ExitCode::Success),
        }
    }
}

fn joined_result(
    joined: std::result::Result<Result<Restored>, tokio::task::JoinError>,
) -> Result<Restored> {
    joined.map_err(|e| Error::Io {
        location: "an upload task".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

pub async fn run_cat(aws: &AwsOptions, config: &SdkConfig, args: &CatArgs) -> Result<ExitCode> {
    if args.key.is_none() {
        return super::by_source::cat(aws, config, args).await;
    }
    cat_archive(aws, config, args).await
}

/// `cat` of an archive URI and a key.
pub async fn cat_archive(aws: &AwsOptions, config: &SdkConfig, args: &CatArgs) -> Result<ExitCode> {
    let Some(key) = &args.key else {
        return Err(Error::Usage(
            "give the member's key after the archive URI".to_string(),
        ));
    };
    let s3 = aws.s3(config);
    let archive = Archive::at(&args.archive)?;
    let selection = Selection {
        keys: vec![key.clone()],
        versions: args.version_id.iter().cloned().collect(),
        ..Selection::default()
    };
    let mut rows = archive.index(&s3).await?;
    while let Some(row) = rows.next().await {
        let row = row?;
        if selection.wants(&row) {
            archive.check_readable(&s3).await?;
            cat(&s3, &archive, &row).await?;
            return Ok(ExitCode::Success);
        }
    }
    Err(Error::bad_input(
        archive.index_uri.to_string(),
        match &args.version_id {
            Some(version) => format!(
                "no member for key `{key}` version `{version}`; `s3bundler ls {}` lists what \
                 the archive holds",
                archive.uri
            ),
            None => format!(
                "no member for key `{key}`; `s3bundler ls {}` lists what the archive holds",
                archive.uri
            ),
        },
    ))
}
