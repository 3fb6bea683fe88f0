//! `plan`: reads an inventory as `group` would and prints what bundling it would produce,
//! request, cost and save; with --sample, also GETs a random sample of the objects and
//! projects how long the run takes. Writes nothing.

use std::path::PathBuf;
use std::time::Instant;

use aws_config::SdkConfig;
use serde::Serialize;

use super::group::{
    open_inventory, read_inventory, GroupingOptions, InventoryArg, ManifestSink, Rules,
};
use crate::aws::AwsOptions;
use crate::error::{Error, ExitCode, Result};
use crate::group::ClosedManifest;
use crate::manifest::parse_manifest;
use crate::plan::{estimate, render, Census, PlanReport};
use crate::pricing::Prices;
use crate::sample::{
    project, read_sample, render as render_sample, Prefixes, Reservoir, SampleResult, TimeReport,
    Workload,
};
use crate::shutdown::Shutdown;
use crate::size::ByteSize;

/// `s3bundler plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub grouping: GroupingOptions,
    /// The bucket `group` writes the bundle manifests to: with it, objects that earlier
    /// inventories grouped (incremental grouping's state) are counted apart, as `group` skips
    /// them; without it, every selected object is planned.
    #[arg(short = 'b', long = "bucket", value_name = "BUCKET", value_parser = crate::s3uri::parse_bucket)]
    pub bucket: Option<String>,
    /// Key prefix of the bundle manifests (with -b).
    #[arg(short = 'p', long = "prefix", default_value = "s3grouper-output")]
    pub prefix: String,
    /// Objects bigger than this are copied whole instead of archived (bundle's -s).
    #[arg(long = "maxsize", value_name = "SIZE", default_value = "2GiB")]
    pub max_size: ByteSize,
    /// The storage class the archives would be kept in: bundle's and run's --storage-class,
    /// with the same default (GLACIER and DEEP_ARCHIVE are printed beside it for comparison).
    #[arg(
        long,
        alias = "target-storage-class",
        value_name = "CLASS",
        default_value = "STANDARD"
    )]
    pub storage_class: String,
    /// A price table in the built-in table's JSON shape (see the README) instead of the
    /// us-east-1 list prices.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Also GET a uniform random sample of N of the objects bundle would read (read-only; the
    /// cost of the N GETs is printed) and project the wall time of the run from it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Worker counts to project the wall time for, comma-separated (with --sample).
    #[arg(long, value_name = "N,…", value_delimiter = ',', default_value = "1,10,100",
          value_parser = clap::value_parser!(u64).range(1..), requires = "sample")]
    pub workers: Vec<u64>,
    /// GETs in flight while sampling: bundle's --concurrency (default: as bundle's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          requires = "sample")]
    pub concurrency: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Objects bundle would GET this many at most are kept for the sample.
const SAMPLE_LIMIT: u64 = 1_000_000;

/// The plan, and with --sample the measured sample and the projected times.
#[derive(Serialize)]
struct PlanOutput {
    #[serde(flatten)]
    report: PlanReport,
    already_grouped: AlreadyGrouped,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<SampleResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<TimeReport>,
}

/// What incremental grouping would skip: not planned.
#[derive(Serialize)]
struct AlreadyGrouped {
    objects: u64,
    bytes: u64,
    /// The state that records them; `None` without -b, with --full or without earlier state.
    earlier_state: Option<String>,
}

/// Counts what every manifest would hold, instead of writing it.
struct CensusSink {
    census: Census,
    max_size: u64,
    /// With --sample: the objects bundle GETs, sampled, and their prefixes.
    reservoir: Option<Reservoir>,
    prefixes: Prefixes,
}

impl ManifestSink for CensusSink {
    async fn accept(&mut self, closed: ClosedManifest) -> Result<()> {
        let location = format!("bundle manifest {}", closed.number);
        for entry in parse_manifest(&closed.body, &location)? {
            let class = entry.storage_class.as_deref().unwrap_or("STANDARD");
            self.census.add_object(class, entry.size, self.max_size);
            if let Some(reservoir) = self
                .reservoir
                .as_mut()
                .filter(|_| entry.size <= self.max_size)
            {
                reservoir.offer(&entry);
                self.prefixes.add(&entry.bucket, &entry.key);
            }
        }
        self.census.close_manifest();
        Ok(())
    }
}

fn load_prices(file: Option<&PathBuf>) -> Result<Prices> {
    let Some(path) = file else {
        return Ok(Prices::builtin());
    };
    let location = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        location: location.clone(),
        source,
    })?;
    Prices::parse(&text, &location)
}

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &PlanArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let prices = load_prices(args.prices.as_ref())?;
    if !prices.classes.contains_key(&args.storage_class) {
        return Err(Error::Usage(format!(
            "--storage-class {} is not in the price table (it has {})",
            args.storage_class,
            prices
                .classes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if args.sample.is_some_and(|n| n > SAMPLE_LIMIT) {
        return Err(Error::Usage(format!(
            "--sample {} is more than {SAMPLE_LIMIT} objects",
            args.sample.unwrap_or(0)
        )));
    }
    let started = Instant::now();
    let s3 = aws.s3(config);
    let (inventory_uri, inventory, columns) = open_inventory(&s3, &args.inventory.manifest).await?;
    let prepared = match &args.bucket {
        Some(bucket) => {
            let grouping = &args.grouping;
            grouping
                .prepare_increment(&s3, bucket, &args.prefix, &inventory_uri, &inventory)
                .await?
        }
        None => Default::default(),
    };
    let mut sink = CensusSink {
        census: Census::new(inventory.files.len() as u64),
        max_size: args.max_size.0,
        reservoir: args.sample.map(|n| {
            Reservoir::new(
                usize::try_from(n).unwrap_or(usize::MAX),
                fastrand::Rng::new(),
            )
        }),
        prefixes: Prefixes::default(),
    };
    let (stats, _) = read_inventory(
        &s3,
        &inventory_uri,
        &inventory,
        columns,
        Rules {
            options: &args.grouping,
            increment: prepared.increment,
        },
        &mut sink,
        shutdown,
    )
    .await?;
    let inventory_seconds = started.elapsed().as_secs_f64();
    let report = estimate(&sink.census, &prices, &args.storage_class);
    let mut output = PlanOutput {
        report,
        already_grouped: AlreadyGrouped {
            objects: stats.objects_already_grouped,
            bytes: stats.bytes_already_grouped,
            earlier_state: prepared.earlier_state.as_ref().map(ToString::to_string),
        },
        sample: None,
        time: None,
    };
    if let (Some(requested), Some(reservoir)) = (args.sample, sink.reservoir.take()) {
        let concurrency = args
            .concurrency
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or_else(super::bundle::default_concurrency);
        let sample = read_sample(
            &s3,
            reservoir.into_entries(),
            requested,
            concurrency,
            &prices,
        )
        .await;
        let archived = sink.census.archived();
        let workload = Workload {
            objects: archived.objects,
            bytes: archived.bytes,
            copies: sink.census.copied().objects,
            manifests: sink.census.manifests,
            inventory_seconds,
            prefixes: sink.prefixes.count(),
        };
        output.time = project(&sample, &workload, sink.prefixes.at_least(), &args.workers);
        output.sample = Some(sample);
    }
    if args.json {
        super::print_json(&output);
    } else {
        println!("plan for {inventory_uri}\n");
        if let Some(earlier) = &output.already_grouped.earlier_state {
            println!(
                "already grouped: {} objects ({}), as {earlier} records; planned: the new and changed ones\n",
                output.already_grouped.objects,
                crate::size::human_bytes(output.already_grouped.bytes)
            );
        }
        print!("{}", render(&output.report));
        if let Some(sample) = &output.sample {
            print!(
                "{}",
                render_sample(sample, output.time.as_ref(), output.report.objects_archived)
            );
        }
    }
    Ok(ExitCode::Success)
}
