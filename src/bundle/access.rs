//! Whose an AccessDenied is. S3 answers 403 AccessDenied alike when the credentials may not
//! read one object (its ACL, a policy naming it) and when they may not read the bucket at all
//! (no `s3:GetObject` on it, a wrong `--expected-bucket-owner`): the first is one DLQ row, the
//! second would file every object of the manifest as denied, so the manifest fails instead,
//! whatever its size. A denial that names the object's KMS key is the object's and never gets
//! here (`RemoteFailure::ObjectDenied`). For any other, the bucket is asked, once per manifest:
//! a GET of a key that cannot exist, beside the denied object. `NoSuchKey` means the
//! credentials may read there (S3 says so only to a role with `s3:ListBucket`, as the
//! deployment grants; without it a missing object is denied too): the denial was the
//! object's, and so is every later one in that bucket. `AccessDenied` means they may not read
//! there: the manifest fails, nothing committed.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::archive::records::DlqReason;
use crate::error::{Error, RemoteFailure, Result};
use crate::manifest::ManifestEntry;
use crate::s3::S3;
use crate::s3uri::S3Uri;

use super::object::{entry_uri, ReadFailure};

/// The buckets of a manifest whose denials are their objects'.
#[derive(Debug, Default)]
pub struct BucketAccess {
    readable: Mutex<HashSet<String>>,
}

impl BucketAccess {
    /// The DLQ row of `entry`, denied with `detail`, when the denial is the object's; the
    /// manifest's failure when it is the bucket's (or S3 cannot say).
    pub async fn judge(
        &self,
        s3: &S3,
        entry: &ManifestEntry<'_>,
        detail: String,
    ) -> Result<(DlqReason, String)> {
        let denied = Ok((DlqReason::AccessDenied, detail));
        let bucket = entry.bucket.as_ref();
        if self.readable.lock().is_ok_and(|r| r.contains(bucket)) {
            return denied;
        }
        let uri = entry_uri(entry);
        let probe = probe_key(&uri);
        match s3.get_range(&probe, 0, 0).await {
            Ok(_) | Err(RemoteFailure::NotFound) => {}
            Err(RemoteFailure::AccessDenied) => {
                return Err(Error::Refused {
                    operation: "GetObject",
                    location: format!("s3://{bucket}/"),
                    detail: format!(
                        "{uri} was denied (AccessDenied), and so was {probe}, a key that does \
                         not exist beside it: the credentials lack access to the bucket (or to \
                         that part of it: s3bundler needs s3:GetObject on the objects and \
                         s3:ListBucket on the bucket), or --expected-bucket-owner does not own \
                         it; fix the policy, then put the manifest back"
                    ),
                })
            }
            Err(failure @ (RemoteFailure::Transient(_) | RemoteFailure::Throttled(_))) => {
                return Err(Error::reading("GetObject", probe.to_string(), failure))
            }
            Err(other) => {
                return match ReadFailure::from_remote_for(other, &probe) {
                    ReadFailure::Fatal(error) => Err(error),
                    // S3 said something of the probe, not of the bucket: the object's denial.
                    _ => denied,
                };
            }
        }
        if let Ok(mut readable) = self.readable.lock() {
            readable.insert(bucket.to_string());
        }
        denied
    }
}

/// A key that cannot exist, beside the object's (same prefix, so that a policy on the prefix
/// answers for both).
fn probe_key(object: &S3Uri) -> S3Uri {
    let prefix = object.key.rfind('/').map_or("", |at| &object.key[..=at]);
    S3Uri::new(
        object.bucket.clone(),
        format!("{prefix}s3bundler-access-probe-{:016x}", fastrand::u64(..)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_sit_beside_the_denied_object() {
        let probe = probe_key(&S3Uri::new("b", "data/2024/x.bin"));
        assert_eq!(probe.bucket, "b");
        assert!(
            probe.key.starts_with("data/2024/s3bundler-access-probe-") && probe.key.len() == 49,
            "{}",
            probe.key
        );
        let root = probe_key(&S3Uri::new("b", "x.bin"));
        assert!(
            root.key.starts_with("s3bundler-access-probe-"),
            "{}",
            root.key
        );
    }
}
