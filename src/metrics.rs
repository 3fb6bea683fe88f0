//! CloudWatch Embedded Metric Format: counters printed as JSON lines that CloudWatch Logs turns
//! into metrics in namespace `S3Bundler`, with no agent and no PutMetricData permission.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::archive::records::DlqReason;

pub const NAMESPACE: &str = "S3Bundler";

/// `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsFormat {
    /// No metric lines.
    None,
    /// CloudWatch Embedded Metric Format lines on stderr (the default inside ECS).
    Emf,
}

impl MetricsFormat {
    /// EMF inside ECS (where the task's logs go to CloudWatch), nothing elsewhere.
    pub fn default_for_environment() -> Self {
        let in_ecs = [
            "ECS_CONTAINER_METADATA_URI_V4",
            "ECS_CONTAINER_METADATA_URI",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if in_ecs {
            MetricsFormat::Emf
        } else {
            MetricsFormat::None
        }
    }
}

/// What a command counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub objects_archived: u64,
    pub bytes_archived: u64,
    pub objects_copied: u64,
    pub objects_failed: BTreeMap<DlqReason, u64>,
    pub manifests_completed: u64,
    pub errors: u64,
}

fn document(
    timestamp_ms: u64,
    dimensions: Value,
    metrics: &[(&str, &str, u64)],
    extra: Value,
) -> String {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit }))
        .collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{ "Namespace": NAMESPACE, "Dimensions": dimensions, "Metrics": definitions }],
        },
    });
    if let (Some(object), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
        for (name, _, value) in metrics {
            object.insert((*name).to_string(), json!(value));
        }
    }
    line.to_string()
}

/// The EMF lines for `counts`: one with the counters, one per failure reason (dimension
/// `Reason`).
pub fn emf_lines(counts: &Counts, timestamp_ms: u64) -> Vec<String> {
    let mut lines = vec![document(
        timestamp_ms,
        json!([[]]),
        &[
            ("ObjectsArchived", "Count", counts.objects_archived),
            ("BytesArchived", "Bytes", counts.bytes_archived),
            ("ObjectsCopied", "Count", counts.objects_copied),
            ("ManifestsCompleted", "Count", counts.manifests_completed),
            ("Errors", "Count", counts.errors),
        ],
        json!({}),
    )];
    for (reason, n) in &counts.objects_failed {
        lines.push(document(
            timestamp_ms,
            json!([["Reason"]]),
            &[("ObjectsFailed", "Count", *n)],
            json!({ "Reason": reason.as_str() }),
        ));
    }
    lines
}

/// Prints the lines on stderr when EMF is on.
pub fn emit(format: MetricsFormat, counts: &Counts) {
    if format != MetricsFormat::Emf {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for line in emf_lines(counts, now) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_are_valid_documents() {
        let counts = Counts {
            objects_archived: 10,
            bytes_archived: 4096,
            objects_copied: 1,
            objects_failed: BTreeMap::from([(DlqReason::NoSuchKey, 2), (DlqReason::Glacier, 1)]),
            manifests_completed: 1,
            errors: 0,
        };
        let lines = emf_lines(&counts, 1_700_000_000_000);
        assert_eq!(lines.len(), 3);
        let first: Value = serde_json::from_str(&lines[0]).unwrap_or_default();
        let directive = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(first["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(directive["Namespace"], "S3Bundler");
        assert_eq!(directive["Dimensions"], json!([[]]));
        assert_eq!(first["ObjectsArchived"], 10);
        assert_eq!(first["BytesArchived"], 4096);
        // Every declared metric has a value in the document, as EMF requires.
        for metric in directive["Metrics"].as_array().cloned().unwrap_or_default() {
            let name = metric["Name"].as_str().unwrap_or("");
            assert!(first[name].is_u64(), "{name} has no value");
            assert!(matches!(metric["Unit"].as_str(), Some("Count" | "Bytes")));
        }
        let reasons: Vec<Value> = lines[1..]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert!(reasons
            .iter()
            .all(|r| r["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == json!([["Reason"]])));
        assert!(reasons
            .iter()
            .any(|r| r["Reason"] == "NoSuchKey" && r["ObjectsFailed"] == 2));
        assert!(reasons
            .iter()
            .any(|r| r["Reason"] == "Glacier" && r["ObjectsFailed"] == 1));
    }
}
