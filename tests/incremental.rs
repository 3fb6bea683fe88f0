//! Incremental grouping: a weekly inventory bundles only what the inventories before it did not.

mod common;

use std::collections::BTreeMap;

use common::*;
use s3bundler::archive::records::parse_index;
use s3bundler::manifest::parse_manifest;
use s3bundler_testkit::generate::{
    body_for, csv_report_of, csv_report_with_objects, rows, upload_report_dated, InventorySpec,
    Row, FIRST_CREATED,
};

const WEEK: u64 = 7 * 86_400_000;
const SECOND_DATE: &str = "2026-11-29T01-00Z";
const OBJECTS: u64 = 500;

/// Two weekly inventories of one source bucket in moto: the first as generated (its objects
/// created), the second a week later with 1% of the objects new (two of them modified just
/// before the first inventory, which missed them), 1% changed (new contents, so new ETag and
/// LastModified) and 1% deleted. The objects change when [`Weeks::change`] is called.
struct Weeks {
    client: aws_sdk_s3::Client,
    source: String,
    /// The second week's new and changed objects, and its deleted keys.
    puts: Vec<(String, Vec<u8>)>,
    deletes: Vec<String>,
    first: String,
    second: String,
    /// The second inventory's selected rows: the current objects.
    current: Vec<Row>,
    /// Keys the second run must bundle.
    new_and_changed: Vec<String>,
    /// New keys modified an hour before the first inventory was created.
    missed_by_first: Vec<String>,
}

async fn two_weeks() -> Weeks {
    let endpoint = moto::endpoint();
    let client = s3_client(endpoint);
    let source = new_bucket(&client, "incr").await;
    let spec = InventorySpec {
        newline_keys: false,
        long_keys: false,
        ..InventorySpec::new(&source, OBJECTS)
    };
    let first = csv_report_with_objects(&client, &spec, 16, false).await;
    let mut second: Vec<Row> = rows(&spec, true).collect();
    let selected: Vec<usize> = (0..second.len())
        .filter(|&i| second[i].selected_by_default())
        .collect();
    let one_percent = (OBJECTS / 100) as usize;
    let mut new_and_changed = Vec::new();
    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
    for &i in selected.iter().step_by(7).take(one_percent) {
        let row = &mut second[i];
        row.size += 1;
        let body = body_for(&row.key, row.size);
        row.etag = hex::encode(<md5::Md5 as md5::Digest>::digest(&body));
        row.last_modified = "2025-11-26T10:00:00.000Z".into();
        puts.push((row.key.clone(), body));
        new_and_changed.push(row.key.clone());
    }
    let deleted: Vec<usize> = selected
        .iter()
        .skip(3)
        .step_by(7)
        .take(one_percent)
        .copied()
        .collect();
    deletes.extend(deleted.iter().map(|&i| second[i].key.clone()));
    let mut index = 0;
    second.retain(|_| {
        index += 1;
        !deleted.contains(&(index - 1))
    });
    let mut missed_by_first = Vec::new();
    for n in 0..one_percent {
        let key = format!("new/object-{n}.json");
        let modified = if n < 2 {
            missed_by_first.push(key.clone());
            "2025-11-22T00:00:00.000Z"
        } else {
            "2025-11-27T12:00:00.000Z"
        };
        let row = Row {
            key: key.clone(),
            size: 100 + n as u64,
            last_modified: modified.into(),
            ..second[selected[0]].clone()
        };
        let body = body_for(&row.key, row.size);
        let row = Row {
            etag: hex::encode(<md5::Md5 as md5::Digest>::digest(&body)),
            ..row
        };
        puts.push((key.clone(), body));
        new_and_changed.push(key);
        second.push(row);
    }
    let report = csv_report_of(&spec, second.clone().into_iter(), second.len() as u64);
    let created = FIRST_CREATED + WEEK;
    let uploaded = upload_report_dated(
        &client,
        &source,
        "inventory/",
        &spec,
        report,
        SECOND_DATE,
        created,
    )
    .await;
    Weeks {
        client,
        source,
        puts,
        deletes,
        first: first.manifest_uri,
        second: uploaded.manifest_uri,
        current: second
            .into_iter()
            .filter(Row::selected_by_default)
            .collect(),
        new_and_changed,
        missed_by_first,
    }
}

impl Weeks {
    /// The objects as the second inventory lists them.
    async fn change(&self) {
        for (key, body) in &self.puts {
            put_object(&self.client, &self.source, key, body.clone()).await;
        }
        for key in &self.deletes {
            self.client
                .delete_object()
                .bucket(&self.source)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
    }
}

async fn run(inventory: &str, archive: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "-m",
        inventory,
        "-b",
        archive,
        "-p",
        "manifests",
        "--archive-prefix",
        "bundles",
        "-c",
        "120",
        "--json",
    ];
    args.extend_from_slice(extra);
    s3bundler(moto::endpoint(), &args).await
}

async fn group(inventory: &str, bucket: &str, prefix: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "group", "-m", inventory, "-b", bucket, "-p", prefix, "--json",
    ];
    args.extend_from_slice(extra);
    s3bundler(moto::endpoint(), &args).await
}

/// Every object under `prefix`, with its bytes.
async fn snapshot(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    for key in list_keys(client, bucket, prefix).await {
        let body = get_object(client, bucket, &key).await;
        objects.insert(key, body);
    }
    objects
}

/// The keys of the bundle manifests written under `prefix` for the inventory of `date`.
async fn manifest_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    date: &str,
) -> Vec<String> {
    let mut keys = Vec::new();
    for key in list_keys(client, bucket, prefix).await {
        if key.contains(date) && key.ends_with(".index") {
            let body = get_object(client, bucket, &key).await;
            for entry in parse_manifest(&body, &key).unwrap_or_else(|e| panic!("{e}")) {
                keys.push(entry.key.into_owned());
            }
        }
    }
    keys.sort();
    keys
}

#[tokio::test]
async fn a_second_weekly_inventory_bundles_exactly_the_new_and_changed_objects() {
    let weeks = two_weeks().await;
    let client = &weeks.client;
    let archive = new_bucket(client, "incr-arch").await;

    let first = run(&weeks.first, &archive, &[]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.json()["earlier_state"], serde_json::Value::Null);
    assert_eq!(first.json()["objects_already_grouped"], 0);
    weeks.change().await;

    let second = run(&weeks.second, &archive, &[]).await;
    assert_eq!(second.code, 0, "{second:?}");
    let summary = second.json();
    let bundled = weeks.new_and_changed.len() as u64;
    assert_eq!(summary["objects_selected"], bundled, "{summary}");
    assert_eq!(summary["objects_archived"], bundled, "{summary}");
    assert_eq!(
        summary["objects_already_grouped"],
        weeks.current.len() as u64 - bundled,
        "{summary}"
    );
    let state = summary["earlier_state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        state.ends_with("/latest/2026-11-22T01-00Z.json"),
        "{summary}"
    );
    let mut expected = weeks.new_and_changed.clone();
    expected.sort();
    assert_eq!(
        manifest_keys(client, &archive, "manifests/", SECOND_DATE).await,
        expected,
        "the second week's manifests hold the new and changed objects, including the ones the \
         first inventory missed: {:?}",
        weeks.missed_by_first
    );

    // Every current object, in the version the second inventory lists, is in exactly one
    // record of the two runs.
    let mut records: BTreeMap<(String, String), u32> = BTreeMap::new();
    for key in list_keys(client, &archive, "bundles/").await {
        if key.ends_with(".index") {
            let index = get_object(client, &archive, &key).await;
            for row in parse_index(&index, &key).unwrap_or_else(|e| panic!("{e}")) {
                *records.entry((row.key, row.etag)).or_default() += 1;
            }
        }
    }
    for row in &weeks.current {
        let found = records.get(&(row.key.clone(), row.etag.clone()));
        assert_eq!(found, Some(&1), "{} {}", row.key, row.etag);
    }
    let verify = s3bundler(
        moto::endpoint(),
        &[
            "verify",
            "--manifests",
            &format!("s3://{archive}/manifests/"),
            "-b",
            &archive,
            "-p",
            "bundles",
            "--json",
        ],
    )
    .await;
    assert_eq!(verify.code, 0, "{verify:?}");

    // locate finds each current object in the archive of the run that bundled it, and a
    // changed one in both weeks' archives, its current contents last. An unchanged key inside
    // the second week's key range is found without reading the second week's index: its
    // catalog entries keep a filter of their keys.
    let changed = &weeks.puts[0].0;
    let (low, high) = (&expected[0], &expected[expected.len() - 1]);
    let unchanged = weeks
        .current
        .iter()
        .find(|row| !weeks.new_and_changed.contains(&row.key) && low < &row.key && &row.key < high)
        .map(|row| row.key.clone())
        .unwrap_or_default();
    let new = weeks.new_and_changed.last().cloned().unwrap_or_default();
    for (key, archived) in [(changed, 2), (&unchanged, 1), (&new, 1)] {
        let out = s3bundler(
            moto::endpoint(),
            &[
                "locate",
                &format!("s3://{}/{key}", weeks.source),
                "--manifests",
                &format!("s3://{archive}/manifests/"),
                "--archives",
                &format!("s3://{archive}/bundles/"),
                "--json",
            ],
        )
        .await;
        assert_eq!(out.code, 0, "{key}: {out:?}");
        let located = out.json()["located"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(located.len(), archived, "{key}: {}", out.stdout);
        let searched_second_week = out.json()["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|manifest| manifest.as_str().unwrap_or_default().contains(SECOND_DATE));
        assert_eq!(
            searched_second_week,
            key != &unchanged,
            "{key}: {}",
            out.stdout
        );
        let current = weeks
            .current
            .iter()
            .find(|row| &row.key == key)
            .expect("current");
        let newest = &located[archived - 1];
        assert_eq!(
            newest["etag"],
            current.etag.as_str(),
            "{key}: {}",
            out.stdout
        );
    }

    // A re-run of the second inventory groups against the first's state, not its own: the
    // same manifests, nothing bundled, the state left as it was.
    let before = snapshot(client, &archive, "manifests/").await;
    let again = run(&weeks.second, &archive, &[]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["objects_selected"], bundled);
    assert_eq!(again.json()["objects_archived"], 0);
    assert_eq!(again.json()["manifests_skipped"], again.json()["manifests"]);
    assert_eq!(snapshot(client, &archive, "manifests/").await, before);
}

/// The margin is what picks up objects an inventory missed: remembered with no margin, the
/// first week's window is empty, and the objects modified just before it are taken as grouped.
#[tokio::test]
async fn objects_an_inventory_missed_are_grouped_next_week_only_thanks_to_the_margin() {
    let weeks = two_weeks().await;
    let client = &weeks.client;
    let manifests = new_bucket(client, "incr-margin").await;
    for (prefix, margin, missed_grouped) in [("with", "2d", true), ("without", "0", false)] {
        let first = group(&weeks.first, &manifests, prefix, &["--margin", margin]).await;
        assert_eq!(first.code, 0, "{first:?}");
        let second = group(&weeks.second, &manifests, prefix, &[]).await;
        assert_eq!(second.code, 0, "{second:?}");
        let grouped = manifest_keys(client, &manifests, &format!("{prefix}/"), SECOND_DATE).await;
        for key in &weeks.missed_by_first {
            assert_eq!(grouped.contains(key), missed_grouped, "{prefix}: {key}");
        }
    }
}

#[tokio::test]
async fn full_regroups_everything_and_records_that_it_did() {
    let weeks = two_weeks().await;
    let client = &weeks.client;
    let manifests = new_bucket(client, "incr-full").await;
    assert_eq!(group(&weeks.first, &manifests, "m", &[]).await.code, 0);
    let full = group(&weeks.second, &manifests, "m", &["--full"]).await;
    assert_eq!(full.code, 0, "{full:?}");
    let summary = full.json();
    assert_eq!(
        summary["objects_selected"],
        weeks.current.len() as u64,
        "{summary}"
    );
    assert_eq!(summary["objects_already_grouped"], 0);
    assert_eq!(summary["earlier_state"], serde_json::Value::Null);
    let state_uri = summary["state"].as_str().unwrap_or_default();
    let state_key = state_uri.trim_start_matches(&format!("s3://{manifests}/"));
    let state: serde_json::Value =
        serde_json::from_slice(&get_object(client, &manifests, state_key).await)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state["full"], true);
    assert_eq!(state["objects_grouped"], weeks.current.len() as u64);
}

/// A state object that cannot be read stops the run before anything is written, naming it and
/// what to do; so does an inventory older than one grouped already.
#[tokio::test]
async fn a_bad_state_object_or_an_older_inventory_stops_the_run_naming_the_state() {
    let weeks = two_weeks().await;
    let client = &weeks.client;
    let manifests = new_bucket(client, "incr-bad").await;
    let first = group(&weeks.first, &manifests, "m", &[]).await;
    assert_eq!(first.code, 0, "{first:?}");
    let state_uri = first.json()["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let state_key = state_uri.trim_start_matches(&format!("s3://{manifests}/"));
    put_object(client, &manifests, state_key, b"{\"inventory\": 3".to_vec()).await;
    let second = group(&weeks.second, &manifests, "m", &[]).await;
    assert_eq!(second.code, 2, "{second:?}");
    assert!(
        second.stderr.contains(&state_uri) && second.stderr.contains("--full"),
        "{second:?}"
    );
    assert!(manifest_keys(client, &manifests, "m/", SECOND_DATE)
        .await
        .is_empty());

    let later_first = new_bucket(client, "incr-order").await;
    assert_eq!(group(&weeks.second, &later_first, "m", &[]).await.code, 0);
    let older = group(&weeks.first, &later_first, "m", &[]).await;
    assert_eq!(older.code, 2, "{older:?}");
    assert!(
        older.stderr.contains(SECOND_DATE) && older.stderr.contains("--full"),
        "{older:?}"
    );
}

/// `plan -b -p` reads the state where `group` would, and plans only what `group` would select.
#[tokio::test]
async fn plan_counts_what_earlier_inventories_grouped_apart() {
    let weeks = two_weeks().await;
    let client = &weeks.client;
    let manifests = new_bucket(client, "incr-plan").await;
    assert_eq!(group(&weeks.first, &manifests, "m", &[]).await.code, 0);
    let plan = s3bundler(
        moto::endpoint(),
        &[
            "plan",
            "-m",
            &weeks.second,
            "-b",
            &manifests,
            "-p",
            "m",
            "--json",
        ],
    )
    .await;
    assert_eq!(plan.code, 0, "{plan:?}");
    let plan = plan.json();
    let new = weeks.new_and_changed.len() as u64;
    assert_eq!(plan["objects"], new, "{plan}");
    assert_eq!(
        plan["already_grouped"]["objects"],
        weeks.current.len() as u64 - new,
        "{plan}"
    );
    let everything = s3bundler(moto::endpoint(), &["plan", "-m", &weeks.second, "--json"]).await;
    assert_eq!(everything.json()["objects"], weeks.current.len() as u64);
}
