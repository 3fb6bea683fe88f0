//! S3 prices by storage class, for `plan`. Pure: no I/O beyond parsing a price file.
//!
//! The built-in table is Amazon S3's public list prices for us-east-1 (first storage tier), as
//! published when this was written: check them against <https://aws.amazon.com/s3/pricing/>
//! and pass `--prices FILE` (the same JSON shape, see `DEFAULT_PRICES`) for another region,
//! a negotiated rate or a price change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What one storage class costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPrice {
    /// USD per GB-month (GB = 2^30 bytes, as S3 bills).
    pub storage_gb_month: f64,
    /// USD per 1,000 PUT, COPY, POST (CreateMultipartUpload, UploadPart, Complete) or LIST.
    pub put_per_1000: f64,
    /// USD per 1,000 GET, HEAD or GetObjectTagging.
    pub get_per_1000: f64,
    /// USD per GB read (the infrequent-access classes charge for retrieval).
    #[serde(default)]
    pub retrieval_per_gb: f64,
    /// USD per 1,000 lifecycle transitions into this class.
    #[serde(default)]
    pub transition_per_1000: f64,
    /// Objects smaller than this are billed as this size.
    #[serde(default)]
    pub min_billable_bytes: u64,
    /// Bytes added to every object and billed at this class's rate (index data of the
    /// archive classes).
    #[serde(default)]
    pub overhead_bytes: u64,
    /// Bytes added to every object and billed at STANDARD's rate (the archive classes keep
    /// each object's name and metadata there).
    #[serde(default)]
    pub overhead_standard_bytes: u64,
    /// What a restore of an archived object costs, by tier (`Bulk`, `Standard`, `Expedited`):
    /// only the archive classes have one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restore: BTreeMap<String, RestorePrice>,
}

/// What restoring from an archive class at one tier costs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePrice {
    /// USD per GB retrieved.
    pub per_gb: f64,
    /// USD per 1,000 RestoreObject requests.
    pub per_1000: f64,
}

/// A price table: storage class name (as S3 spells it) to its prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Where the prices apply, for the report.
    pub region: String,
    pub classes: BTreeMap<String, ClassPrice>,
}

/// us-east-1 list prices (first storage tier). GLACIER is S3 Glacier Flexible Retrieval.
pub const DEFAULT_PRICES: &str = r#"{
  "region": "us-east-1",
  "classes": {
    "STANDARD":            {"storage_gb_month": 0.023,   "put_per_1000": 0.005, "get_per_1000": 0.0004},
    "INTELLIGENT_TIERING": {"storage_gb_month": 0.023,   "put_per_1000": 0.005, "get_per_1000": 0.0004},
    "STANDARD_IA":         {"storage_gb_month": 0.0125,  "put_per_1000": 0.01,  "get_per_1000": 0.001,  "retrieval_per_gb": 0.01, "transition_per_1000": 0.01, "min_billable_bytes": 131072},
    "ONEZONE_IA":          {"storage_gb_month": 0.01,    "put_per_1000": 0.01,  "get_per_1000": 0.001,  "retrieval_per_gb": 0.01, "transition_per_1000": 0.01, "min_billable_bytes": 131072},
    "GLACIER_IR":          {"storage_gb_month": 0.004,   "put_per_1000": 0.02,  "get_per_1000": 0.01,   "retrieval_per_gb": 0.03, "transition_per_1000": 0.02, "min_billable_bytes": 131072},
    "GLACIER":             {"storage_gb_month": 0.0036,  "put_per_1000": 0.03,  "get_per_1000": 0.0004, "transition_per_1000": 0.03, "overhead_bytes": 32768, "overhead_standard_bytes": 8192,
                           "restore": {"Expedited": {"per_gb": 0.03, "per_1000": 10.0}, "Standard": {"per_gb": 0.01, "per_1000": 0.05}, "Bulk": {"per_gb": 0.0, "per_1000": 0.0}}},
    "DEEP_ARCHIVE":        {"storage_gb_month": 0.00099, "put_per_1000": 0.05,  "get_per_1000": 0.0004, "transition_per_1000": 0.05, "overhead_bytes": 32768, "overhead_standard_bytes": 8192,
                           "restore": {"Standard": {"per_gb": 0.02, "per_1000": 0.10}, "Bulk": {"per_gb": 0.0025, "per_1000": 0.025}}},
    "REDUCED_REDUNDANCY":  {"storage_gb_month": 0.024,   "put_per_1000": 0.005, "get_per_1000": 0.0004}
  }
}"#;

const GB: f64 = (1u64 << 30) as f64;

impl Prices {
    /// The built-in us-east-1 table.
    pub fn builtin() -> Prices {
        // The table is a constant checked by a unit test; parsing it cannot fail.
        Prices::parse(DEFAULT_PRICES, "the built-in price table").unwrap_or_else(|_| Prices {
            region: String::new(),
            classes: BTreeMap::new(),
        })
    }

    /// Reads a table in `DEFAULT_PRICES`'s shape; it must price STANDARD.
    pub fn parse(json: &str, location: &str) -> Result<Prices> {
        let prices: Prices = serde_json::from_str(json)
            .map_err(|e| Error::bad_input(location, format!("not a price table: {e}")))?;
        if !prices.classes.contains_key("STANDARD") {
            return Err(Error::bad_input(
                location,
                "the price table has no STANDARD class",
            ));
        }
        Ok(prices)
    }

    /// The prices of `class`; an unknown or missing class is priced as STANDARD.
    pub fn class(&self, class: &str) -> &ClassPrice {
        self.classes
            .get(class)
            .or_else(|| self.classes.get("STANDARD"))
            .unwrap_or(&FREE)
    }

    /// USD per month to store `objects` objects of `bytes` bytes in total in `class`, of which
    /// `small_objects` (holding `small_bytes`) are below the class's minimum billable size.
    pub fn monthly_storage(&self, class: &str, count: &SizeCount) -> f64 {
        let price = self.class(class);
        let billable = if price.min_billable_bytes > 0 {
            count.bytes - count.small_bytes + count.small_objects * price.min_billable_bytes
        } else {
            count.bytes
        };
        let own = (billable + count.objects * price.overhead_bytes) as f64 / GB;
        let standard = (count.objects * price.overhead_standard_bytes) as f64 / GB;
        own * price.storage_gb_month + standard * self.class("STANDARD").storage_gb_month
    }
}

/// Objects and bytes, and how many of them are below 128 KiB (the minimum billable size of
/// the infrequent-access classes and, by default, of lifecycle transitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SizeCount {
    pub objects: u64,
    pub bytes: u64,
    pub small_objects: u64,
    pub small_bytes: u64,
}

/// Below this, S3 bills infrequent-access objects as this size, and S3 Lifecycle does not
/// transition objects unless a rule says otherwise.
pub const SMALL_OBJECT_BYTES: u64 = 128 << 10;

impl SizeCount {
    pub fn add(&mut self, size: u64) {
        self.objects += 1;
        self.bytes += size;
        if size < SMALL_OBJECT_BYTES {
            self.small_objects += 1;
            self.small_bytes += size;
        }
    }

    pub fn merge(&mut self, other: &SizeCount) {
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.small_objects += other.small_objects;
        self.small_bytes += other.small_bytes;
    }
}

static FREE: ClassPrice = ClassPrice {
    storage_gb_month: 0.0,
    put_per_1000: 0.0,
    get_per_1000: 0.0,
    retrieval_per_gb: 0.0,
    transition_per_1000: 0.0,
    min_billable_bytes: 0,
    overhead_bytes: 0,
    overhead_standard_bytes: 0,
    restore: BTreeMap::new(),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_prices_every_class_s3_bills() {
        let prices = Prices::parse(DEFAULT_PRICES, "builtin").unwrap();
        assert_eq!(prices, Prices::builtin());
        for class in [
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
            "GLACIER",
            "DEEP_ARCHIVE",
        ] {
            assert!(prices.classes.contains_key(class), "{class}");
        }
    }

    #[test]
    fn archive_classes_bill_40_kib_per_object_and_ia_classes_128_kib_minimum() {
        let prices = Prices::builtin();
        let mut count = SizeCount::default();
        for _ in 0..1_000_000 {
            count.add(4096);
        }
        // One million 4 KiB objects: 3.81 GiB.
        let standard = prices.monthly_storage("STANDARD", &count);
        assert!((standard - 4_096_000_000.0 / GB * 0.023).abs() < 1e-9);
        // Deep Archive: 4 KiB + 32 KiB at 0.00099 and 8 KiB at 0.023, per object.
        let deep = prices.monthly_storage("DEEP_ARCHIVE", &count);
        let expected =
            (1_000_000.0 * 36_864.0 / GB) * 0.00099 + (1_000_000.0 * 8192.0 / GB) * 0.023;
        assert!((deep - expected).abs() < 1e-9, "{deep} vs {expected}");
        assert!(
            deep > standard,
            "tiny objects cost more in Deep Archive than in Standard"
        );
        // Standard-IA bills each as 128 KiB.
        let ia = prices.monthly_storage("STANDARD_IA", &count);
        assert!((ia - 1_000_000.0 * 131_072.0 / GB * 0.0125).abs() < 1e-9);
    }

    #[test]
    fn unknown_classes_cost_as_standard_and_bad_tables_are_refused() {
        let prices = Prices::builtin();
        assert_eq!(prices.class("SNOW"), prices.class("STANDARD"));
        assert!(matches!(
            Prices::parse("{}", "p.json"),
            Err(Error::BadInput { location, .. }) if location == "p.json"
        ));
        assert!(Prices::parse(r#"{"region":"x","classes":{}}"#, "p.json").is_err());
        let typo = r#"{"region":"x","classes":{"STANDARD":{"storage_gb_month":1,"put_per_1000":1,"get_per_1000":1,"retreival_per_gb":1}}}"#;
        assert!(
            Prices::parse(typo, "p.json").is_err(),
            "misspelt fields are refused"
        );
    }
}
