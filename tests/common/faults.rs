//! Bundling through the fault proxy: objects on moto, and the check that a manifest failed as
//! refused with nothing left behind.

use futures_util::StreamExt;
use s3bundler_testkit::faults::{FaultPlan, FaultProxy};

use super::{
    body, entry, incomplete_uploads, list_keys, moto, new_bucket, put_object, s3_client, s3bundler,
    write_manifest,
};

pub fn proxy(upstream: &str, plan: FaultPlan) -> FaultProxy {
    FaultProxy::start(upstream, plan).unwrap_or_else(|e| panic!("fault proxy: {e}"))
}

/// Objects on moto (`sizes` gives each key's size), an empty archive bucket and the manifest
/// at `m/<name>.0.index`: (client, source, archive, manifest URI).
pub async fn moto_objects(
    name: &str,
    sizes: &[(String, usize)],
) -> (aws_sdk_s3::Client, String, String, String) {
    let client = s3_client(moto::endpoint());
    let src = new_bucket(&client, "src").await;
    let arch = new_bucket(&client, "arch").await;
    let puts = sizes
        .iter()
        .enumerate()
        .map(|(i, (key, size))| put_object(&client, &src, key, body(*size, i as u8)));
    futures_util::stream::iter(puts)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let entries: Vec<_> = sizes
        .iter()
        .map(|(key, size)| entry(&src, key, *size as u64, None))
        .collect();
    let manifest = write_manifest(&client, &src, &format!("m/{name}.0.index"), &entries).await;
    (client, src, arch, manifest)
}

/// `count` keys `<prefix>/<n>` of `size` bytes.
pub fn keys(prefix: &str, count: usize, size: usize) -> Vec<(String, usize)> {
    (0..count)
        .map(|i| (format!("{prefix}/{i}"), size))
        .collect()
}

/// Runs `bundle` on moto (objects `o/0`… of 1 KiB) through `plan` and checks that the manifest
/// failed as refused (exit 5, `expected` in the message) with nothing committed and no upload
/// left.
pub async fn assert_refused(name: &str, count: usize, plan: FaultPlan, expected: &str) {
    let (client, src, arch, manifest) = moto_objects(name, &keys("o", count, 1024)).await;
    let faults = proxy(moto::endpoint(), plan);
    let out = s3bundler(&faults.endpoint, &["bundle", "-m", &manifest, "-b", &arch]).await;
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains(expected) && out.stderr.contains("nothing was committed"),
        "{}",
        out.stderr
    );
    assert_eq!(
        list_keys(&client, &arch, "").await,
        Vec::<String>::new(),
        "no archive, no index"
    );
    assert_eq!(
        list_keys(&client, &src, "m/").await,
        [format!("m/{name}.0.index")],
        "no DLQ"
    );
    assert_eq!(incomplete_uploads(&client, &arch).await, 0);
}
