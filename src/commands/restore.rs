//! `restore`: requests restores of cold archives (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering
//! archive tiers) so that `cat` and `extract` can read them; a dry run with cost and time unless
//! `--yes`; `--status` and `--wait` follow the restores. The core takes a list of archive URIs:
//! given on the command line or found from the committed manifests under `--manifests`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use futures_util::{stream, StreamExt};
use serde::Serialize;

use super::locate::locate;
use super::recall_place::{Places, RecallPlace};
use crate::archive::layout::{BundleLayout, Compression};
use crate::aws::AwsOptions;
use crate::catalog::KeyQuery;
use crate::error::{Error, ExitCode, Result};
use crate::manifest::manifest_entries;
use crate::pricing::Prices;
use crate::reading::RowStream;
use crate::s3::{ObjectHead, Restoring, S3};
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::human_bytes;
use crate::thaw::{restore_cost, ColdClass, Need, RestoreCost, Tier};
use crate::verify::check::list_manifests;

/// `s3bundler restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Archives to restore (`…/NAME.tar`, `.tar.gz` or `.tar.zst`), or with --manifests and
    /// --archives objects as they were (`s3://SOURCE_BUCKET/KEY`): the archives (or big-object
    /// copies) that hold them, found through the catalog.
    #[arg(
        value_name = "s3://ARCHIVE_BUCKET/…/NAME.tar | s3://SOURCE_BUCKET/KEY",
        required_unless_present = "manifests"
    )]
    pub uris: Vec<S3Uri>,
    /// With --manifests and --archives and no URI: the archives of every committed manifest
    /// there.
    #[command(flatten)]
    pub place: RecallPlace,
    /// With `s3://SOURCE_BUCKET`: the archives that hold every archived object whose key starts
    /// with this.
    #[arg(long = "prefix", value_name = "P", requires = "manifests")]
    pub prefix: Option<String>,
    /// Retrieval tier: Bulk is the cheapest and slowest; DEEP_ARCHIVE and the
    /// Intelligent-Tiering archive tiers offer no Expedited.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Tier::Bulk)]
    pub tier: Tier,
    /// Days the restored copy stays readable (billed as STANDARD storage meanwhile). Not sent
    /// for Intelligent-Tiering archive tiers, whose objects move back to a frequent tier.
    #[arg(long, default_value_t = crate::thaw::DEFAULT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Request the restores. Without it, only print what would be requested and what it costs.
    #[arg(long, conflicts_with = "status")]
    pub yes: bool,
    /// Only print each archive's restore state: not needed, needed, in progress, ready until.
    #[arg(long)]
    pub status: bool,
    /// After requesting (or with --status), wait until every archive is readable.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how often each archive still restoring is asked about (HEAD): 90s, 5m, 1h.
    #[arg(long, value_name = "DURATION", default_value = "5m",
          value_parser = crate::retry::parse_duration)]
    pub poll_every: Duration,
    /// Requests (HEAD, RestoreObject) in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print the archives and totals as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where one archive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Read at once: no restore needed.
    NotNeeded,
    /// Cold, no restore asked (the dry run's "would request").
    Needed,
    /// Requested by this run.
    Requested,
    InProgress,
    Ready,
    /// No such archive.
    Missing,
    /// Its request failed (see `detail`).
    Failed,
}

impl State {
    fn of(need: &Need) -> State {
        match need {
            Need::NotNeeded => State::NotNeeded,
            Need::Needed { .. } => State::Needed,
            Need::InProgress { .. } => State::InProgress,
            Need::Ready { .. } => State::Ready,
        }
    }
}

/// One archive, as HEAD (and this run's request) left it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub archive: String,
    pub bytes: u64,
    /// `STANDARD` when S3 named none.
    pub storage_class: String,
    pub cold_class: Option<ColdClass>,
    pub state: State,
    /// Readable until then (a ready restore's expiry).
    pub until: Option<String>,
    /// Why a request failed.
    pub detail: Option<String>,
    #[serde(skip)]
    uri: S3Uri,
}

impl Entry {
    /// The entry for `uri` from its HEAD (`None`: it does not exist).
    pub fn of(uri: S3Uri, head: Option<&ObjectHead>) -> Entry {
        let need = head.map(Need::of);
        Entry {
            archive: uri.to_string(),
            bytes: head.map_or(0, |h| h.size),
            storage_class: head
                .and_then(|h| h.storage_class.clone())
                .unwrap_or_else(|| "STANDARD".to_string()),
            cold_class: head.and_then(|h| {
                ColdClass::of(h.storage_class.as_deref(), h.archive_status.as_deref())
            }),
            state: need.as_ref().map_or(State::Missing, State::of),
            until: match need {
                Some(Need::Ready { until, .. }) => until,
                _ => None,
            },
            detail: None,
            uri,
        }
    }

    fn line(&self) -> String {
        let state = match (self.state, &self.until, &self.detail) {
            (State::Ready, Some(until), _) => format!("ready until {until}"),
            (State::Failed, _, Some(why)) => format!("failed: {why}"),
            (state, ..) => state.to_string(),
        };
        format!(
            "{}  {}  {}  {state}",
            self.archive,
            human_bytes(self.bytes),
            self.cold_class
                .map_or(self.storage_class.as_str(), |c| c.name())
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::NotNeeded => "not needed",
            State::Needed => "needed",
            State::Requested => "requested",
            State::InProgress => "in progress",
            State::Ready => "ready",
            State::Missing => "missing",
            State::Failed => "failed",
        })
    }
}

/// The archives of one cold class that would be (or were) requested, and what they cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassTotal {
    pub archives: u64,
    pub bytes: u64,
    /// Of those, to request.
    pub to_request: u64,
    pub to_request_bytes: u64,
    pub cost: RestoreCost,
    pub cost_usd: f64,
    /// How long the tier takes for this class.
    pub time: Option<&'static str>,
}

/// What the command prints.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub tier: Option<Tier>,
    pub days: u32,
    pub archives: Vec<Entry>,
    /// Archives by state.
    pub states: BTreeMap<State, u64>,
    /// By storage class as S3 names it (cold ones by their cold class).
    pub classes: BTreeMap<String, ClassTotal>,
    pub cost_usd: f64,
    /// Manifests with no archive to restore (not committed, empty), and why.
    pub skipped: Vec<String>,
    /// With --wait: archives not readable when it stopped.
    pub pending: Vec<String>,
}

impl Report {
    fn new(args: &RestoreArgs, archives: Vec<Entry>, skipped: Vec<String>) -> Report {
        Report {
            dry_run: !args.yes && !args.status,
            tier: (!args.status).then_some(args.tier),
            days: args.days,
            archives,
            skipped,
            ..Report::default()
        }
    }

    /// Counts states and prices what is to request (or was requested) at `tier`.
    fn total(&mut self, prices: &Prices) {
        self.states.clear();
        self.classes.clear();
        for entry in &self.archives {
            *self.states.entry(entry.state).or_default() += 1;
            if entry.state == State::Missing {
                continue;
            }
            let name = entry
                .cold_class
                .map_or(entry.storage_class.clone(), |c| c.name().to_string());
            let total = self.classes.entry(name).or_default();
            total.archives += 1;
            total.bytes += entry.bytes;
            if matches!(entry.state, State::Needed | State::Requested) {
                total.to_request += 1;
                total.to_request_bytes += entry.bytes;
            }
        }
        self.cost_usd = 0.0;
        let Some(tier) = self.tier else {
            return;
        };
        let cold: std::collections::BTreeSet<ColdClass> =
            self.archives.iter().filter_map(|e| e.cold_class).collect();
        for class in cold {
            let total = self.classes.entry(class.name().to_string()).or_default();
            if total.to_request == 0 {
                continue;
            }
            total.cost = restore_cost(
                prices,
                class,
                tier,
                total.to_request,
                total.to_request_bytes,
                self.days,
            );
            total.cost_usd = total.cost.total();
            total.time = class.time(tier);
            self.cost_usd += total.cost_usd;
        }
    }

    fn print(&self, json: bool) {
        if json {
            return super::print_json(self);
        }
        for entry in &self.archives {
            println!("{}", entry.line());
        }
        for skipped in &self.skipped {
            println!("skipped: {skipped}");
        }
        let states = super::counts_line(&self.states);
        println!("{} archives: {states}", self.archives.len());
        for (class, total) in &self.classes {
            let mut line = format!(
                "{class}: {} archives, {}",
                total.archives,
                human_bytes(total.bytes)
            );
            if total.to_request > 0 {
                let verb = if self.dry_run {
                    "would request"
                } else {
                    "requested"
                };
                line.push_str(&format!(
                    "; {verb} {} ({}) at {}: ${:.2} (requests ${:.2}, retrieval ${:.2}, \
                     copy for {} days ${:.2}), ready {}",
                    total.to_request,
                    human_bytes(total.to_request_bytes),
                    self.tier.map_or("", Tier::name),
                    total.cost_usd,
                    total.cost.requests_usd,
                    total.cost.retrieval_usd,
                    self.days,
                    total.cost.copy_usd,
                    total.time.unwrap_or("-")
                ));
            }
            println!("{line}");
        }
        if self.tier.is_some() {
            println!("estimated cost: ${:.2}", self.cost_usd);
        }
        if self.dry_run && self.states.get(&State::Needed).is_some_and(|n| *n > 0) {
            println!("dry run: nothing was requested; add --yes to request these restores");
        }
        for pending in &self.pending {
            println!("still restoring: {pending}");
        }
    }
}

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &RestoreArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let concurrency = args.concurrency.max(1);
    let (uris, skipped) = select(&s3, args, concurrency).await?;
    let mut entries = heads(&s3, uris, concurrency).await?;
    if !args.status {
        refuse_unoffered_tier(&entries, args.tier)?;
    }
    if args.yes {
        request(&s3, &mut entries, args, concurrency).await;
    }
    let mut report = Report::new(args, entries, skipped);
    let prices = Prices::builtin();
    report.total(&prices);
    let mut code = outcome(&report);
    if args.wait && code == ExitCode::Success {
        code = wait(&s3, &mut report, args, concurrency, shutdown).await?;
        report.total(&prices);
    }
    report.print(args.json);
    Ok(code)
}

/// 0 when every archive is readable, requested or needs nothing; 1 when one is missing;
/// the exit code of a failed request otherwise. A dry run's needed archives are fine.
fn outcome(report: &Report) -> ExitCode {
    if report.states.contains_key(&State::Failed) {
        return ExitCode::RemoteFailed;
    }
    if report.states.contains_key(&State::Missing) {
        return ExitCode::Partial;
    }
    ExitCode::Success
}

/// The archives to restore: those named, and those of the committed manifests under
/// `--manifests`; with the manifests skipped, and why.
async fn select(
    s3: &S3,
    args: &RestoreArgs,
    concurrency: usize,
) -> Result<(Vec<S3Uri>, Vec<String>)> {
    let mut uris = Vec::new();
    let by_source = args.place.manifests.is_some() || args.place.archives.is_some();
    let mut skipped = Vec::new();
    for uri in &args.uris {
        let in_archives = args
            .place
            .archives
            .as_ref()
            .is_none_or(|a| a.bucket == uri.bucket);
        if !by_source || (in_archives && crate::extract::Archive::at(uri).is_ok()) {
            crate::extract::Archive::at(uri)?;
            uris.push(uri.clone());
            continue;
        }
        let (holders, why) = holders_of(s3, args, uri).await?;
        uris.extend(holders);
        skipped.extend(why);
    }
    if by_source && args.uris.is_empty() {
        let places = args.place.require("restore --manifests")?;
        let manifests = list_manifests(
            s3,
            &places.manifests,
            &places.archive_bucket,
            &places.archive_prefix,
        )
        .await?;
        let mut found = stream::iter(manifests)
            .map(|manifest| committed_archive(s3, &places, manifest))
            .buffered(concurrency);
        while let Some(found) = found.next().await {
            match found? {
                Ok(uri) => uris.push(uri),
                Err(why) => skipped.push(why),
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    uris.retain(|uri| seen.insert(uri.clone()));
    Ok((uris, skipped))
}

/// The archives (and big-object copies) that hold the objects `source` names (a key, or with
/// `--prefix` a bucket), found through the catalog; and why an object has none.
async fn holders_of(
    s3: &S3,
    args: &RestoreArgs,
    source: &S3Uri,
) -> Result<(Vec<S3Uri>, Option<String>)> {
    let places = args.place.require("restore s3://SOURCE_BUCKET/KEY")?;
    let query = KeyQuery::of_object("restore", &source.key, args.prefix.as_deref())?;
    let report = locate(s3, &places, &source.bucket, &query, None).await?;
    if report.located.is_empty() {
        return Ok((
            Vec::new(),
            Some(format!("{source}: not archived, nothing to restore")),
        ));
    }
    let holders = report
        .located
        .iter()
        .filter_map(|located| located.archive.parse::<S3Uri>().ok())
        .collect();
    Ok((holders, None))
}

/// The archive of a committed manifest (its index exists), or why there is none to restore.
async fn committed_archive(
    s3: &S3,
    places: &Places,
    manifest: S3Uri,
) -> Result<std::result::Result<S3Uri, String>> {
    let Some(source) = first_source(s3, &manifest).await? else {
        return Ok(Err(format!("{manifest}: empty manifest, no archive")));
    };
    let in_archives = |key: String| S3Uri::new(places.archive_bucket.clone(), key);
    let layout = |compression| {
        BundleLayout::new(&places.archive_prefix, &source, &manifest.key, compression)
    };
    let index = in_archives(layout(Compression::None).index_key);
    if head(s3, &index).await?.is_none() {
        return Ok(Err(format!(
            "{manifest}: not committed (no index at {index}); bundle it first"
        )));
    }
    for compression in Compression::ALL {
        let archive = in_archives(layout(compression).archive_key);
        if head(s3, &archive).await?.is_some() {
            return Ok(Ok(archive));
        }
    }
    Ok(Err(format!(
        "{manifest}: its index {index} exists but no archive beside it; run verify on it"
    )))
}

/// The source bucket of a manifest's first object: where its archive is filed. Only the first
/// rows are parsed; the rest of the download is dropped with the stream.
async fn first_source(s3: &S3, manifest: &S3Uri) -> Result<Option<String>> {
    let got = s3
        .get_stream(manifest)
        .await
        .map_err(|f| Error::reading("GetObject", manifest.to_string(), f))?;
    let location = manifest.to_string();
    let mut entries = RowStream::start(s3, manifest, got, move |reader| {
        Ok(manifest_entries(reader, &location))
    });
    Ok(match entries.next().await {
        Some(entry) => Some(entry?.bucket.to_string()),
        None => None,
    })
}

async fn head(s3: &S3, uri: &S3Uri) -> Result<Option<ObjectHead>> {
    s3.head(uri)
        .await
        .map_err(|f| Error::reading("HeadObject", uri.to_string(), f))
}

/// HEADs every archive, `concurrency` at once, in order.
async fn heads(s3: &S3, uris: Vec<S3Uri>, concurrency: usize) -> Result<Vec<Entry>> {
    let mut entries = Vec::with_capacity(uris.len());
    let mut heads = stream::iter(uris)
        .map(|uri| async move {
            let found = head(s3, &uri).await?;
            Ok::<_, Error>(Entry::of(uri, found.as_ref()))
        })
        .buffered(concurrency);
    while let Some(entry) = heads.next().await {
        entries.push(entry?);
    }
    Ok(entries)
}

/// Refuses, before any request, a tier the class of an archive to restore does not offer
/// (Expedited from DEEP_ARCHIVE).
fn refuse_unoffered_tier(entries: &[Entry], tier: Tier) -> Result<()> {
    let refused: Vec<String> = entries
        .iter()
        .filter(|e| e.state == State::Needed)
        .filter_map(|e| {
            let class = e.cold_class?;
            class
                .time(tier)
                .is_none()
                .then(|| format!("{} ({})", e.archive, class.name()))
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--tier {} is not offered for {}: use --tier Standard or Bulk; nothing was requested",
        tier.name(),
        refused.join(", ")
    )))
}

/// Requests a restore of every archive that needs one, `concurrency` at once.
async fn request(s3: &S3, entries: &mut [Entry], args: &RestoreArgs, concurrency: usize) {
    let days = i32::try_from(args.days).unwrap_or(i32::MAX);
    let mut answers = stream::iter(entries.iter_mut().filter(|e| e.state == State::Needed))
        .map(|entry| async move {
            let days = entry
                .cold_class
                .is_some_and(ColdClass::takes_days)
                .then_some(days);
            let answer = s3.restore_object(&entry.uri, args.tier, days).await;
            (entry, answer)
        })
        .buffer_unordered(concurrency);
    while let Some((entry, answer)) = answers.next().await {
        match answer {
            Ok(Restoring::Requested) => entry.state = State::Requested,
            Ok(Restoring::AlreadyInProgress) => entry.state = State::InProgress,
            Err(failure) => {
                let error = Error::restoring(entry.archive.clone(), failure);
                tracing::error!("{error}");
                entry.state = State::Failed;
                entry.detail = Some(error.to_string());
            }
        }
    }
}

/// Polls the archives on their way (requested, in progress) every `--poll-every` until each is
/// readable; on SIGINT or SIGTERM stops and lists what is still restoring (exit 130).
async fn wait(
    s3: &S3,
    report: &mut Report,
    args: &RestoreArgs,
    concurrency: usize,
    mut shutdown: Shutdown,
) -> Result<ExitCode> {
    let needed: Vec<String> = report
        .archives
        .iter()
        .filter(|e| e.state == State::Needed)
        .map(|e| e.archive.clone())
        .collect();
    if !needed.is_empty() {
        return Err(Error::Usage(format!(
            "--wait: no restore was requested for {} (they would never be ready): request them \
             first with --yes --wait",
            needed.join(", ")
        )));
    }
    let on_the_way = |e: &Entry| matches!(e.state, State::Requested | State::InProgress);
    let total = report.archives.iter().filter(|e| on_the_way(e)).count() as u64;
    let progress = crate::progress::objects_bar(Some(total), "restored");
    loop {
        let waiting: Vec<usize> = (0..report.archives.len())
            .filter(|i| on_the_way(&report.archives[*i]))
            .collect();
        progress.set_position(total - waiting.len() as u64);
        if waiting.is_empty() {
            progress.finish_and_clear();
            return Ok(ExitCode::Success);
        }
        tokio::select! {
            _ = tokio::time::sleep(args.poll_every) => {}
            _ = shutdown.requested() => {
                progress.finish_and_clear();
                report.pending = waiting.iter().map(|i| report.archives[*i].archive.clone()).collect();
                tracing::warn!(
                    "stopped waiting: {} archives still restoring; run restore --status to follow them",
                    report.pending.len()
                );
                return Ok(ExitCode::Interrupted);
            }
        }
        let uris: Vec<S3Uri> = waiting
            .iter()
            .map(|i| report.archives[*i].uri.clone())
            .collect();
        let polled = heads(s3, uris, concurrency).await?;
        for (i, entry) in waiting.into_iter().zip(polled) {
            // A restore just asked for may show no state yet: it is still on its way.
            if entry.state != State::Needed {
                report.archives[i] = entry;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thaw::RestoreState;

    fn head(class: Option<&str>, restore: Option<RestoreState>) -> ObjectHead {
        ObjectHead {
            size: 1 << 30,
            storage_class: class.map(str::to_string),
            restore,
            ..ObjectHead::default()
        }
    }

    fn entry(name: &str, head: Option<ObjectHead>) -> Entry {
        Entry::of(S3Uri::new("arch", format!("{name}.tar")), head.as_ref())
    }

    #[test]
    fn states_come_from_the_head_and_a_missing_archive_is_a_problem() {
        let entries = [
            entry("std", Some(head(None, None))),
            entry("deep", Some(head(Some("DEEP_ARCHIVE"), None))),
            entry(
                "going",
                Some(head(Some("GLACIER"), Some(RestoreState::InProgress))),
            ),
            entry(
                "ready",
                Some(head(
                    Some("GLACIER"),
                    Some(RestoreState::Ready {
                        until: Some("T".into()),
                    }),
                )),
            ),
            entry("gone", None),
        ];
        let states: Vec<State> = entries.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                State::NotNeeded,
                State::Needed,
                State::InProgress,
                State::Ready,
                State::Missing
            ]
        );
        assert!(
            entries[3].line().ends_with("ready until T"),
            "{}",
            entries[3].line()
        );
        assert!(
            entries[2].line().ends_with("in progress"),
            "{}",
            entries[2].line()
        );
        let mut report = Report {
            tier: Some(Tier::Bulk),
            days: 7,
            dry_run: true,
            archives: entries.to_vec(),
            ..Report::default()
        };
        report.total(&Prices::builtin());
        assert_eq!(outcome(&report), ExitCode::Partial);
        let deep = &report.classes["DEEP_ARCHIVE"];
        assert_eq!((deep.to_request, deep.time), (1, Some("within 48 hours")));
        // 1 GiB of Deep Archive at Bulk, 7 days of copy: 0.0025 + 0.000025 + 0.023 * 7 / 30.
        let expected = 0.0025 + 0.025 / 1000.0 + 0.023 * 7.0 / 30.0;
        assert!(
            (report.cost_usd - expected).abs() < 1e-9,
            "{}",
            report.cost_usd
        );
        assert_eq!(
            report.classes["GLACIER"].to_request, 0,
            "in progress or ready"
        );
    }

    #[test]
    fn expedited_from_deep_archive_is_refused_before_any_request() {
        let entries = [
            entry("deep", Some(head(Some("DEEP_ARCHIVE"), None))),
            entry("glacier", Some(head(Some("GLACIER"), None))),
        ];
        let error = refuse_unoffered_tier(&entries, Tier::Expedited).expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains("s3://arch/deep.tar (DEEP_ARCHIVE)") && !text.contains("glacier.tar"),
            "{text}"
        );
        assert_eq!(error.exit_code(), ExitCode::BadInput);
        assert!(refuse_unoffered_tier(&entries, Tier::Standard).is_ok());
    }
}
