//! Getting cold archives back: what `x-amz-restore` says, whether an archive needs a restore,
//! which tiers its class offers, how long they take and what they cost. Pure: `restore`, `cat`,
//! `extract`, `locate` and `plan` share these words and numbers; the requests are elsewhere.

use serde::Serialize;

use crate::pricing::Prices;
use crate::s3::ObjectHead;
use crate::s3uri::S3Uri;

/// Days a restored copy stays readable unless `--days` says otherwise.
pub const DEFAULT_DAYS: u32 = 7;

/// A restore's state, from HeadObject's `x-amz-restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RestoreState {
    /// `ongoing-request="true"`: requested, not readable yet.
    InProgress,
    /// `ongoing-request="false"`: readable; the temporary copy expires at `until` (HTTP date;
    /// none for Intelligent-Tiering, whose restored objects move back to a frequent tier).
    Ready { until: Option<String> },
}

/// Parses `x-amz-restore` (`ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00
/// GMT"`): `name="value"` pairs separated by commas, where a value may hold commas.
pub fn parse_restore(header: &str) -> Result<RestoreState, String> {
    let bad = |why: &str| format!("x-amz-restore `{header}`: {why}");
    let mut rest = header.trim();
    let (mut ongoing, mut expiry) = (None, None);
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| bad("expected name=\"value\""))?;
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| bad("a value is not quoted"))?;
        let (value, after) = after
            .split_once('"')
            .ok_or_else(|| bad("a quoted value does not end"))?;
        match name.trim() {
            "ongoing-request" => ongoing = Some(value),
            "expiry-date" => expiry = Some(value.to_string()),
            _ => {}
        }
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    match ongoing {
        Some("true") => Ok(RestoreState::InProgress),
        Some("false") => Ok(RestoreState::Ready { until: expiry }),
        Some(other) => Err(bad(&format!("ongoing-request is `{other}`"))),
        None => Err(bad("no ongoing-request")),
    }
}

/// Where an archive sits when it cannot be read without a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ColdClass {
    /// S3 Glacier Flexible Retrieval.
    #[serde(rename = "GLACIER")]
    Glacier,
    #[serde(rename = "DEEP_ARCHIVE")]
    DeepArchive,
    /// Intelligent-Tiering's Archive Access tier.
    #[serde(rename = "INTELLIGENT_TIERING/ARCHIVE_ACCESS")]
    ArchiveAccess,
    /// Intelligent-Tiering's Deep Archive Access tier.
    #[serde(rename = "INTELLIGENT_TIERING/DEEP_ARCHIVE_ACCESS")]
    DeepArchiveAccess,
}

impl ColdClass {
    /// The cold class of a storage class and Intelligent-Tiering archive status; `None` for
    /// those read at once (STANDARD, the IA classes, GLACIER_IR, INTELLIGENT_TIERING's
    /// frequent and infrequent tiers).
    pub fn of(storage_class: Option<&str>, archive_status: Option<&str>) -> Option<ColdClass> {
        match (storage_class, archive_status) {
            (_, Some("ARCHIVE_ACCESS")) => Some(ColdClass::ArchiveAccess),
            (_, Some("DEEP_ARCHIVE_ACCESS")) => Some(ColdClass::DeepArchiveAccess),
            (Some("GLACIER"), _) => Some(ColdClass::Glacier),
            (Some("DEEP_ARCHIVE"), _) => Some(ColdClass::DeepArchive),
            _ => None,
        }
    }

    /// The storage class a plan's `--storage-class` names, if it is cold.
    pub fn of_storage_class(class: &str) -> Option<ColdClass> {
        ColdClass::of(Some(class), None)
    }

    pub fn name(self) -> &'static str {
        match self {
            ColdClass::Glacier => "GLACIER",
            ColdClass::DeepArchive => "DEEP_ARCHIVE",
            ColdClass::ArchiveAccess => "INTELLIGENT_TIERING/ARCHIVE_ACCESS",
            ColdClass::DeepArchiveAccess => "INTELLIGENT_TIERING/DEEP_ARCHIVE_ACCESS",
        }
    }

    /// Intelligent-Tiering restores take no Days (S3 refuses them): the object moves back to
    /// the frequent tier instead of getting a temporary copy.
    pub fn takes_days(self) -> bool {
        matches!(self, ColdClass::Glacier | ColdClass::DeepArchive)
    }

    /// How long a restore at `tier` takes (AWS's published times), or `None` when the class
    /// does not offer the tier.
    pub fn time(self, tier: Tier) -> Option<&'static str> {
        match (self, tier) {
            (ColdClass::Glacier, Tier::Expedited) => Some("1-5 minutes"),
            (ColdClass::Glacier | ColdClass::ArchiveAccess, Tier::Standard) => Some("3-5 hours"),
            (ColdClass::Glacier | ColdClass::ArchiveAccess, Tier::Bulk) => Some("5-12 hours"),
            (ColdClass::DeepArchive | ColdClass::DeepArchiveAccess, Tier::Standard) => {
                Some("within 12 hours")
            }
            (ColdClass::DeepArchive | ColdClass::DeepArchiveAccess, Tier::Bulk) => {
                Some("within 48 hours")
            }
            (_, Tier::Expedited) => None,
        }
    }

    /// The tiers this class offers, cheapest first.
    pub fn tiers(self) -> impl Iterator<Item = Tier> {
        [Tier::Bulk, Tier::Standard, Tier::Expedited]
            .into_iter()
            .filter(move |tier| self.time(*tier).is_some())
    }
}

/// `--tier`: how fast (and how dear) a restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum Tier {
    Bulk,
    Standard,
    Expedited,
}

impl Tier {
    /// As S3 and the price table spell it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Bulk => "Bulk",
            Tier::Standard => "Standard",
            Tier::Expedited => "Expedited",
        }
    }
}

/// Whether reading an object needs a restore, and how far one went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "restore", rename_all = "snake_case")]
pub enum Need {
    /// Read at once (not in a cold class).
    NotNeeded,
    /// Cold, and no restore was requested (or the last one expired).
    Needed {
        class: ColdClass,
    },
    InProgress {
        class: ColdClass,
    },
    /// Restored: readable until `until`.
    Ready {
        class: ColdClass,
        until: Option<String>,
    },
}

impl Need {
    /// What HeadObject told about `head`.
    pub fn of(head: &ObjectHead) -> Need {
        let Some(class) = ColdClass::of(
            head.storage_class.as_deref(),
            head.archive_status.as_deref(),
        ) else {
            return Need::NotNeeded;
        };
        match &head.restore {
            None => Need::Needed { class },
            Some(RestoreState::InProgress) => Need::InProgress { class },
            Some(RestoreState::Ready { until }) => Need::Ready {
                class,
                until: until.clone(),
            },
        }
    }

    /// Its bytes can be read now.
    pub fn readable(&self) -> bool {
        matches!(self, Need::NotNeeded | Need::Ready { .. })
    }

    /// `not needed`, `needed (DEEP_ARCHIVE)`, `in progress`, `ready until T`.
    pub fn describe(&self) -> String {
        match self {
            Need::NotNeeded => "not needed".to_string(),
            Need::Needed { class } => format!("needed ({})", class.name()),
            Need::InProgress { class } => format!("in progress ({})", class.name()),
            Need::Ready { until: Some(t), .. } => format!("ready until {t}"),
            Need::Ready { until: None, .. } => "ready".to_string(),
        }
    }
}

/// The command that requests a restore of `archive`, as `cat`, `extract` and `locate` suggest it.
pub fn restore_command(archive: &S3Uri) -> String {
    format!("s3bundler restore {archive} --yes")
}

/// What to tell someone who tried to read `archive` and could not, by `need`: the command to
/// run, or that a restore is under way. `None` when it is readable.
pub fn advice(archive: &S3Uri, need: &Need) -> Option<String> {
    match need {
        Need::NotNeeded | Need::Ready { .. } => None,
        Need::Needed { class } => Some(format!(
            "{archive} is in {} and must be restored before it can be read: run `{}` (without \
             --yes it prints the cost and time; --tier and --days choose them), then try again \
             once it is ready",
            class.name(),
            restore_command(archive)
        )),
        Need::InProgress { class } => Some(format!(
            "{archive} is in {} and a restore of it is in progress: try again once it is ready \
             (`s3bundler restore {archive} --status --wait` waits for it)",
            class.name()
        )),
    }
}

/// What restoring some archives of one class at one tier costs, in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RestoreCost {
    /// Per RestoreObject request.
    pub requests_usd: f64,
    /// Per GB retrieved.
    pub retrieval_usd: f64,
    /// The temporary copy, billed as STANDARD storage for `days`.
    pub copy_usd: f64,
}

impl RestoreCost {
    pub fn total(&self) -> f64 {
        self.requests_usd + self.retrieval_usd + self.copy_usd
    }
}

const GB: f64 = (1u64 << 30) as f64;
/// S3 bills storage by the month; a day is a thirtieth of one.
const DAYS_PER_MONTH: f64 = 30.0;

/// The cost of restoring `archives` archives of `bytes` in total from `class` at `tier`, the
/// copy kept `days` (Intelligent-Tiering: no retrieval charge, no copy).
pub fn restore_cost(
    prices: &Prices,
    class: ColdClass,
    tier: Tier,
    archives: u64,
    bytes: u64,
    days: u32,
) -> RestoreCost {
    let storage_class = match class {
        ColdClass::Glacier => "GLACIER",
        ColdClass::DeepArchive => "DEEP_ARCHIVE",
        ColdClass::ArchiveAccess | ColdClass::DeepArchiveAccess => return RestoreCost::default(),
    };
    let price = prices
        .classes
        .get(storage_class)
        .and_then(|p| p.restore.get(tier.name()))
        .cloned()
        .unwrap_or_default();
    let gb = bytes as f64 / GB;
    RestoreCost {
        requests_usd: archives as f64 / 1000.0 * price.per_1000,
        retrieval_usd: gb * price.per_gb,
        copy_usd: gb * prices.class("STANDARD").storage_gb_month * f64::from(days) / DAYS_PER_MONTH,
    }
}

/// One line of a recall estimate: what recalling some bytes from a class at a tier costs and
/// how long it takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallEstimate {
    pub tier: Tier,
    pub archives: u64,
    pub bytes: u64,
    pub cost: RestoreCost,
    pub total_usd: f64,
    pub time: &'static str,
}

/// Every tier `class` offers for restoring `archives` archives of `bytes`, copies kept `days`.
pub fn recall_estimates(
    prices: &Prices,
    class: ColdClass,
    archives: u64,
    bytes: u64,
    days: u32,
) -> Vec<RecallEstimate> {
    class
        .tiers()
        .filter_map(|tier| {
            let cost = restore_cost(prices, class, tier, archives, bytes, days);
            Some(RecallEstimate {
                tier,
                archives,
                bytes,
                total_usd: cost.total(),
                cost,
                time: class.time(tier)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        class: Option<&str>,
        status: Option<&str>,
        restore: Option<RestoreState>,
    ) -> ObjectHead {
        ObjectHead {
            storage_class: class.map(str::to_string),
            archive_status: status.map(str::to_string),
            restore,
            ..ObjectHead::default()
        }
    }

    #[test]
    fn x_amz_restore_in_progress_and_ready_until_parse() {
        assert_eq!(
            parse_restore("ongoing-request=\"true\""),
            Ok(RestoreState::InProgress)
        );
        assert_eq!(
            parse_restore(
                "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""
            ),
            Ok(RestoreState::Ready {
                until: Some("Fri, 21 Dec 2012 00:00:00 GMT".into())
            })
        );
        assert_eq!(
            parse_restore("ongoing-request=\"false\""),
            Ok(RestoreState::Ready { until: None })
        );
    }

    #[test]
    fn a_malformed_x_amz_restore_is_an_error_not_a_panic() {
        for bad in [
            "",
            "ongoing-request",
            "ongoing-request=true",
            "ongoing-request=\"true",
            "ongoing-request=\"maybe\"",
            "expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"",
            "=\"\"",
        ] {
            let error = parse_restore(bad).expect_err(bad);
            assert!(error.contains("x-amz-restore"), "{error}");
        }
    }

    #[test]
    fn cold_classes_need_a_restore_until_one_is_ready_and_others_never() {
        assert_eq!(Need::of(&head(None, None, None)), Need::NotNeeded);
        assert_eq!(
            Need::of(&head(Some("GLACIER_IR"), None, None)),
            Need::NotNeeded
        );
        assert_eq!(
            Need::of(&head(Some("INTELLIGENT_TIERING"), None, None)),
            Need::NotNeeded
        );
        let deep = Need::of(&head(Some("DEEP_ARCHIVE"), None, None));
        assert_eq!(
            deep,
            Need::Needed {
                class: ColdClass::DeepArchive
            }
        );
        assert!(!deep.readable());
        let int = head(Some("INTELLIGENT_TIERING"), Some("ARCHIVE_ACCESS"), None);
        assert_eq!(
            Need::of(&int),
            Need::Needed {
                class: ColdClass::ArchiveAccess
            }
        );
        let going = head(Some("GLACIER"), None, Some(RestoreState::InProgress));
        assert_eq!(
            Need::of(&going),
            Need::InProgress {
                class: ColdClass::Glacier
            }
        );
        let ready = Need::of(&head(
            Some("GLACIER"),
            None,
            Some(RestoreState::Ready {
                until: Some("T".into()),
            }),
        ));
        assert!(ready.readable());
        assert_eq!(ready.describe(), "ready until T");
    }

    #[test]
    fn advice_names_the_restore_command_or_says_it_is_in_progress() {
        let uri = S3Uri::new("arch", "b/abc123/src/m.tar");
        let needed = advice(
            &uri,
            &Need::Needed {
                class: ColdClass::DeepArchive,
            },
        )
        .expect("advice");
        assert!(
            needed.contains("`s3bundler restore s3://arch/b/abc123/src/m.tar --yes`"),
            "{needed}"
        );
        let going = advice(
            &uri,
            &Need::InProgress {
                class: ColdClass::Glacier,
            },
        )
        .expect("advice");
        assert!(going.contains("in progress"), "{going}");
        assert_eq!(advice(&uri, &Need::NotNeeded), None);
    }

    #[test]
    fn expedited_is_offered_by_glacier_alone_and_times_follow_aws() {
        assert_eq!(
            ColdClass::Glacier.time(Tier::Expedited),
            Some("1-5 minutes")
        );
        assert_eq!(ColdClass::DeepArchive.time(Tier::Expedited), None);
        assert_eq!(
            ColdClass::DeepArchive.time(Tier::Bulk),
            Some("within 48 hours")
        );
        assert_eq!(
            ColdClass::ArchiveAccess.time(Tier::Standard),
            Some("3-5 hours")
        );
        assert_eq!(
            ColdClass::DeepArchiveAccess.time(Tier::Standard),
            Some("within 12 hours")
        );
        assert_eq!(ColdClass::Glacier.tiers().count(), 3);
        assert_eq!(
            ColdClass::DeepArchive.tiers().collect::<Vec<_>>(),
            [Tier::Bulk, Tier::Standard]
        );
        assert!(!ColdClass::ArchiveAccess.takes_days());
        assert!(ColdClass::Glacier.takes_days());
    }

    #[test]
    fn restore_costs_follow_the_us_east_1_list_prices() {
        let prices = Prices::builtin();
        let tb = 1024 * (1u64 << 30);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // 1,000 archives, 1 TiB, Deep Archive Bulk, kept 30 days.
        let deep = restore_cost(&prices, ColdClass::DeepArchive, Tier::Bulk, 1000, tb, 30);
        assert!(close(deep.requests_usd, 0.025), "{deep:?}");
        assert!(close(deep.retrieval_usd, 1024.0 * 0.0025), "{deep:?}");
        assert!(close(deep.copy_usd, 1024.0 * 0.023), "{deep:?}");
        let standard = restore_cost(&prices, ColdClass::DeepArchive, Tier::Standard, 1000, tb, 0);
        assert!(
            close(standard.total(), 0.10 + 1024.0 * 0.02),
            "{standard:?}"
        );
        let glacier = restore_cost(&prices, ColdClass::Glacier, Tier::Bulk, 1000, tb, 0);
        assert!(
            close(glacier.total(), 0.0),
            "Bulk from GLACIER is free: {glacier:?}"
        );
        let fast = restore_cost(&prices, ColdClass::Glacier, Tier::Expedited, 1000, tb, 0);
        assert!(close(fast.total(), 10.0 + 1024.0 * 0.03), "{fast:?}");
        let int = restore_cost(
            &prices,
            ColdClass::ArchiveAccess,
            Tier::Standard,
            1000,
            tb,
            7,
        );
        assert_eq!(int.total(), 0.0, "no retrieval charge, no copy");
        let estimates = recall_estimates(&prices, ColdClass::DeepArchive, 10, tb, 7);
        assert_eq!(
            estimates.iter().map(|e| e.tier).collect::<Vec<_>>(),
            [Tier::Bulk, Tier::Standard]
        );
    }
}
