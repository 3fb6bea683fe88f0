//! `plan`: reads an inventory as `group` would and prints what bundling it would produce,
//! request, cost and save. Writes nothing.

use std::path::PathBuf;

use aws_config::SdkConfig;

use super::group::{open_inventory, read_inventory, GroupingOptions, InventoryArg, ManifestSink};
use crate::aws::AwsOptions;
use crate::error::{Error, ExitCode, Result};
use crate::group::ClosedManifest;
use crate::manifest::parse_manifest;
use crate::plan::{estimate, render, Census};
use crate::pricing::Prices;
use crate::shutdown::Shutdown;
use crate::size::ByteSize;

/// `s3bundler plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub grouping: GroupingOptions,
    /// Objects bigger than this are copied whole instead of archived (bundle's -s).
    #[arg(long = "maxsize", value_name = "SIZE", default_value = "2GiB")]
    pub max_size: ByteSize,
    /// The storage class the archives would be kept in.
    #[arg(long, value_name = "CLASS", default_value = "DEEP_ARCHIVE")]
    pub target_storage_class: String,
    /// A price table in the built-in table's JSON shape (see the README) instead of the
    /// us-east-1 list prices.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Counts what every manifest would hold, instead of writing it.
struct CensusSink {
    census: Census,
    max_size: u64,
}

impl ManifestSink for CensusSink {
    async fn accept(&mut self, closed: ClosedManifest) -> Result<()> {
        let location = format!("bundle manifest {}", closed.number);
        for entry in parse_manifest(&closed.body, &location)? {
            let class = entry.storage_class.as_deref().unwrap_or("STANDARD");
            self.census.add_object(class, entry.size, self.max_size);
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
    if !prices.classes.contains_key(&args.target_storage_class) {
        return Err(Error::Usage(format!(
            "--target-storage-class {} is not in the price table (it has {})",
            args.target_storage_class,
            prices
                .classes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let s3 = aws.s3(config);
    let (inventory_uri, inventory, columns) = open_inventory(&s3, &args.inventory.manifest).await?;
    let mut sink = CensusSink {
        census: Census::new(inventory.files.len() as u64),
        max_size: args.max_size.0,
    };
    read_inventory(
        &s3,
        &inventory_uri,
        &inventory,
        columns,
        &args.grouping,
        &mut sink,
        shutdown,
    )
    .await?;
    let report = estimate(&sink.census, &prices, &args.target_storage_class);
    if args.json {
        super::print_json(&report);
    } else {
        println!("plan for {inventory_uri}\n");
        print!("{}", render(&report));
    }
    Ok(ExitCode::Success)
}
