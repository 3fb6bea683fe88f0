//! Incremental grouping's state: one small object per grouped inventory, beside the bundle
//! manifests, at `PREFIX/state/<inventory folders before the date>/<selection>/<date>.json`
//! (the folders name the source bucket and the inventory configuration). A later inventory
//! reads the state of the latest earlier one and selects only what that did not group (see
//! [`Increment`]). A state is written once, after all of its run's manifests: a run that
//! stops before leaves none, and the next run groups against the same earlier state again.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, RemoteFailure, Result};
use crate::group::{EarlierWindow, Increment, Selection};
use crate::inventory::InventoryManifest;
use crate::manifest::join_prefix;
use crate::s3::{Put, S3};
use crate::s3uri::S3Uri;

/// States hold a fingerprint per object of a `--margin` window: tens of bytes each.
const STATE_LIMIT: u64 = 4 << 30;

/// What one grouped inventory recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub inventory: String,
    pub source_bucket: String,
    /// The inventory's `creationTimestamp` (ms since the epoch), as manifest.json gives it.
    pub creation_timestamp: String,
    pub selection: Selection,
    /// Grouped with `--full`: every object, whatever earlier states recorded.
    pub full: bool,
    /// The state this run grouped against, if any.
    pub earlier_state: Option<String>,
    pub manifests: Vec<String>,
    pub objects_grouped: u64,
    pub bytes_grouped: u64,
    pub margin_seconds: u64,
    /// Rows modified from then on (ms since the epoch), or of unknown date, are in `window`.
    pub window_start_ms: i64,
    /// Fingerprints (`group::fingerprint`, hex) of every selected row of the window, grouped by
    /// this run or by an earlier one, sorted.
    pub window: Vec<String>,
}

/// Where the states of one inventory configuration and selection live.
#[derive(Debug, Clone)]
struct Place {
    bucket: String,
    /// `PREFIX/state/<series>/<selection>/`
    folder: String,
    /// This inventory's date folder.
    date: String,
}

impl Place {
    /// `None` when the inventory key has no date folder under a configuration's folders.
    fn of(bucket: &str, prefix: &str, inventory_key: &str, selection: &Selection) -> Option<Self> {
        let folders: Vec<&str> = inventory_key.split('/').filter(|s| !s.is_empty()).collect();
        let (date, series) = folders[..folders.len().saturating_sub(1)].split_last()?;
        if series.is_empty() {
            return None;
        }
        let name = format!(
            "state/{}/{}/",
            series.join("-"),
            selection_folder(selection)
        );
        Some(Place {
            bucket: bucket.to_string(),
            folder: join_prefix(prefix, &name),
            date: (*date).to_string(),
        })
    }

    fn uri(&self, date: &str) -> S3Uri {
        S3Uri::new(self.bucket.clone(), format!("{}{date}.json", self.folder))
    }
}

/// A folder per selection, so that states of other selections (`-i`, `-g`, `--all-versions`)
/// are never taken for this one's: `latest`, `all-versions`, then `-glacier`, `-prefix-<md5>`.
fn selection_folder(selection: &Selection) -> String {
    use md5::{Digest, Md5};
    let mut name = String::from(if selection.all_versions {
        "all-versions"
    } else {
        "latest"
    });
    if selection.glacier {
        name.push_str("-glacier");
    }
    if let Some(prefix) = &selection.include_prefix {
        let digest = hex::encode(Md5::digest(prefix.as_bytes()));
        name.push_str(&format!("-prefix-{}", &digest[..8]));
    }
    name
}

/// How this run groups: against which earlier state, and what it will record.
#[derive(Debug, Default)]
pub struct Prepared {
    pub increment: Increment,
    pub earlier_state: Option<S3Uri>,
    /// Where this run's state goes; `None` when the inventory cannot have one.
    own: Option<Own>,
}

#[derive(Debug)]
struct Own {
    uri: S3Uri,
    creation_timestamp: String,
    margin_seconds: u64,
    window_start_ms: i64,
    full: bool,
}

/// The options of incremental grouping.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub full: bool,
    pub margin: Duration,
}

/// Finds the latest state of an inventory of this configuration and selection earlier than
/// this one, and reads it (unless `--full`). An inventory older than one already grouped is
/// refused unless it was grouped itself (a re-run) or `--full` is given: grouping it now would
/// bundle again what the later one grouped.
pub async fn prepare(
    s3: &S3,
    bucket: &str,
    prefix: &str,
    inventory_uri: &S3Uri,
    inventory: &InventoryManifest,
    selection: &Selection,
    options: Options,
) -> Result<Prepared> {
    let Some(place) = Place::of(bucket, prefix, &inventory_uri.key, selection) else {
        warn!("{inventory_uri} is not in S3 Inventory's layout (…/SOURCE/CONFIG/DATE/manifest.json): every object is grouped and no state is recorded");
        return Ok(Prepared::default());
    };
    let created = inventory.creation_timestamp.as_deref();
    let Some(created_ms) = created.and_then(|t| t.trim().parse::<i64>().ok()) else {
        warn!("{inventory_uri} has no creationTimestamp in milliseconds: every object is grouped and no state is recorded");
        return Ok(Prepared::default());
    };
    let margin_ms = i64::try_from(options.margin.as_millis()).unwrap_or(i64::MAX);
    let own = Own {
        uri: place.uri(&place.date),
        creation_timestamp: created.unwrap_or_default().trim().to_string(),
        margin_seconds: options.margin.as_secs(),
        window_start_ms: created_ms.saturating_sub(margin_ms),
        full: options.full,
    };
    let mut prepared = Prepared {
        increment: Increment {
            earlier: None,
            window_start: Some(own.window_start_ms),
        },
        earlier_state: None,
        own: None,
    };
    if !options.full {
        let folder = S3Uri::new(place.bucket.clone(), place.folder.clone());
        // The folder is this run's output place: a bucket missing there is an output failure.
        let listed = s3
            .list(&folder)
            .await
            .map_err(|f| Error::writing("ListObjectsV2", folder.to_string(), f))?;
        let dates: Vec<&str> = listed
            .iter()
            .filter_map(|(key, _)| key.strip_prefix(&place.folder)?.strip_suffix(".json"))
            .filter(|date| !date.contains('/'))
            .collect();
        let later = dates.iter().filter(|&&d| d > place.date.as_str()).max();
        if let (Some(later), false) = (later, dates.contains(&place.date.as_str())) {
            return Err(Error::IncrementalState {
                state: place.uri(later).to_string(),
                detail: format!(
                    "a later inventory than {inventory_uri} was grouped already; grouping this \
                     older one now would bundle again what that one grouped, so nothing was \
                     written. Group it with --full if it is wanted anyway"
                ),
            });
        }
        if let Some(earlier) = dates.iter().filter(|&&d| d < place.date.as_str()).max() {
            let uri = place.uri(earlier);
            prepared.increment.earlier = Some(load(s3, &uri, selection).await?);
            prepared.earlier_state = Some(uri);
        }
    }
    prepared.own = Some(own);
    Ok(prepared)
}

/// Reads an earlier state; one that cannot be used stops the run, naming it.
async fn load(s3: &S3, uri: &S3Uri, selection: &Selection) -> Result<EarlierWindow> {
    let body = s3
        .get_bytes(uri, STATE_LIMIT)
        .await
        .map_err(|f| Error::reading("GetObject", uri.to_string(), f))?;
    let unusable = |problem: String| Error::IncrementalState {
        state: uri.to_string(),
        detail: format!(
            "{problem}. It records what the group run of an earlier inventory grouped: put back \
             the state that run wrote (an earlier version of it), or delete it to group against \
             the state before it, or group with --full to select every object again"
        ),
    };
    let state: State = serde_json::from_slice(&body)
        .map_err(|e| unusable(format!("cannot be read as a state object ({e})")))?;
    if state.selection != *selection {
        return Err(unusable(format!(
            "records another selection ({:?}) than this run's ({selection:?})",
            state.selection
        )));
    }
    let grouped = state
        .window
        .iter()
        .map(|hex| u128::from_str_radix(hex, 16))
        .collect::<Result<HashSet<u128>, _>>()
        .map_err(|e| unusable(format!("lists a fingerprint that is not hex ({e})")))?;
    Ok(EarlierWindow {
        start: state.window_start_ms,
        grouped,
    })
}

/// What the run grouped, for its state.
pub struct Grouped<'a> {
    pub inventory: &'a S3Uri,
    pub source_bucket: &'a str,
    pub selection: &'a Selection,
    pub manifests: Vec<String>,
    pub objects: u64,
    pub bytes: u64,
    pub window: Vec<u128>,
}

impl Prepared {
    /// Writes this run's state once all its manifests are written; `None` when the inventory
    /// has none. A state in place is never replaced: an identical one is a re-run's, and one
    /// with other content stops the run, naming it.
    pub async fn record(&self, s3: &S3, grouped: Grouped<'_>) -> Result<Option<S3Uri>> {
        let Some(own) = &self.own else {
            return Ok(None);
        };
        let mut window = grouped.window;
        window.sort_unstable();
        window.dedup();
        let state = State {
            inventory: grouped.inventory.to_string(),
            source_bucket: grouped.source_bucket.to_string(),
            creation_timestamp: own.creation_timestamp.clone(),
            selection: grouped.selection.clone(),
            full: own.full,
            earlier_state: self.earlier_state.as_ref().map(S3Uri::to_string),
            manifests: grouped.manifests,
            objects_grouped: grouped.objects,
            bytes_grouped: grouped.bytes,
            margin_seconds: own.margin_seconds,
            window_start_ms: own.window_start_ms,
            window: window.iter().map(|f| format!("{f:032x}")).collect(),
        };
        let body = bytes::Bytes::from(serde_json::to_vec_pretty(&state).unwrap_or_default());
        let put = Put {
            if_none_match: true,
            ..Put::new("application/json")
        };
        match s3.put(&own.uri, body.clone(), &put).await {
            Ok(_) => Ok(Some(own.uri.clone())),
            Err(RemoteFailure::PreconditionFailed) => {
                let existing = s3
                    .get_bytes(&own.uri, STATE_LIMIT)
                    .await
                    .map_err(|f| Error::reading("GetObject", own.uri.to_string(), f))?;
                if existing == body {
                    return Ok(Some(own.uri.clone()));
                }
                Err(Error::IncrementalState {
                    state: own.uri.to_string(),
                    detail: "this inventory was grouped before with other options (--full, \
                             --margin, -k) and a state is never replaced; the manifests are \
                             written. Group with the options it records, or delete it if the \
                             next inventory is to be grouped against this run"
                        .to_string(),
                })
            }
            Err(failure) => Err(Error::writing("PutObject", own.uri.to_string(), failure)),
        }
    }
}

/// `--margin`: `2d`, `36h`, `90m`, `600s` or plain seconds.
pub fn parse_margin(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => {
            return Err(format!(
                "`{text}` is not a margin: use e.g. 2d, 36h, 90m or 600s"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a margin: use e.g. 2d, 36h, 90m or 600s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_take_days_hours_minutes_and_seconds() {
        assert_eq!(parse_margin("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_margin("36h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_margin("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_margin("0"), Ok(Duration::ZERO));
        for bad in ["", "d", "2w", "-1d", "1.5d"] {
            assert!(parse_margin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_are_kept_per_configuration_and_selection() {
        let key = "inv/src/cfg/2026-11-22T01-00Z/manifest.json";
        let place = Place::of("b", "p", key, &Selection::default());
        let place = place.unwrap_or_else(|| panic!("a layout"));
        assert_eq!(
            place.uri(&place.date).to_string(),
            "s3://b/p/state/inv-src-cfg/latest/2026-11-22T01-00Z.json"
        );
        let other = Selection {
            include_prefix: Some("logs/".into()),
            glacier: true,
            all_versions: true,
        };
        assert!(selection_folder(&other).starts_with("all-versions-glacier-prefix-"));
        assert!(Place::of("b", "p", "cfg/manifest.json", &other).is_none());
    }
}
