//! Typed errors. Each variant maps to one of the exit codes of the product contract, and every
//! message names the object or file concerned and, where one exists, what the user can do.

use std::fmt;

/// Exit codes of the product contract (SPEC section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// The job completed but some objects went to the DLQ, or verification found problems.
    Partial = 1,
    BadInput = 2,
    ReadFailed = 3,
    WriteFailed = 4,
    RemoteFailed = 5,
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Why a remote call failed, after the SDK's own retries. Transient failures (throttling, 5xx,
/// timeouts, dropped connections) are kept apart from permanent ones because the caller treats
/// them differently: a transient failure may succeed later, a permanent one never will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    NotFound,
    /// AccessDenied without a sign of whose: one object's, or the whole bucket's (see
    /// `bundle::access`).
    AccessDenied,
    /// Access to this object, never to its bucket, was refused: S3 named the KMS key the object
    /// is encrypted with, which the credentials may not use.
    ObjectDenied(String),
    /// The object is archived (GLACIER, DEEP_ARCHIVE) and needs a restore before it can be read.
    InvalidObjectState,
    /// SSE-C: the object can be read only with the customer-provided key it was written with.
    CustomerKey(String),
    PreconditionFailed,
    /// S3 asked the caller to slow down (503 SlowDown, 429): the request rate must fall.
    Throttled(String),
    /// A 5xx answer, a timeout or a broken connection: another try may succeed.
    Transient(String),
    /// The caller, not the object, was refused: no usable credentials, or credentials S3 does
    /// not accept (InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken, InvalidToken).
    /// Every other request would fail the same way.
    Credentials(String),
    /// The bucket, not the object: it does not exist (NoSuchBucket), it is in another region
    /// (PermanentRedirect, AuthorizationHeaderMalformed, IllegalLocationConstraintException),
    /// or the credentials may not read it. Every object of it fails the same way.
    Bucket(String),
    /// S3 refused the request's time (RequestTimeTooSkewed) even after the clock was corrected
    /// from S3's Date header: this machine's clock, not the object, is wrong.
    ClockSkew(String),
    /// Any other answer the service gave; retrying will not change it.
    Permanent(String),
}

impl RemoteFailure {
    /// Worth another try after a pause: throttling, 5xx, timeouts, dropped connections.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RemoteFailure::Transient(_) | RemoteFailure::Throttled(_)
        )
    }
}

impl fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteFailure::NotFound => f.write_str("not found"),
            RemoteFailure::AccessDenied => f.write_str("access denied"),
            RemoteFailure::ObjectDenied(m) => write!(f, "access denied ({m})"),
            RemoteFailure::InvalidObjectState => {
                f.write_str("object is archived (InvalidObjectState) and must be restored first")
            }
            RemoteFailure::CustomerKey(m) => write!(
                f,
                "the object is encrypted with a customer-provided key (SSE-C), which s3bundler does not have ({m})"
            ),
            RemoteFailure::PreconditionFailed => f.write_str("precondition failed"),
            RemoteFailure::Throttled(m) | RemoteFailure::Transient(m) => {
                write!(f, "{m} (still failing after retries)")
            }
            RemoteFailure::Credentials(m) => write!(
                f,
                "the credentials were refused or are missing ({m}); refresh or fix them (AWS_PROFILE or --profile, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, `aws sso login`, the task role)"
            ),
            RemoteFailure::ClockSkew(m) => write!(
                f,
                "S3 refused the request time even after the clock was corrected from S3's Date header ({m}); set this machine's clock right (NTP)"
            ),
            RemoteFailure::Bucket(m) | RemoteFailure::Permanent(m) => f.write_str(m),
        }
    }
}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line was wrong.
    #[error("{0}")]
    Usage(String),

    /// An input file, row or message is malformed; fixing the input is the only remedy.
    #[error("bad input in {location}: {detail}")]
    BadInput { location: String, detail: String },

    /// An input could not be read (missing, access denied).
    #[error("cannot read {location}: {failure}{}", hint_suffix(.failure, "read"))]
    Read {
        location: String,
        failure: RemoteFailure,
    },

    /// An output could not be written.
    #[error("cannot write {location}: {failure}{}", hint_suffix(.failure, "write"))]
    Write {
        location: String,
        failure: RemoteFailure,
    },

    /// A RestoreObject refused for good (denied, no such archive).
    #[error("cannot request a restore of {location}: {failure}{}", hint_suffix(.failure, "restore (s3:RestoreObject)"))]
    RestoreRefused {
        location: String,
        failure: RemoteFailure,
    },

    /// A remote service kept failing after the retries.
    #[error("{operation} on {location} failed: {detail}; the service kept failing after retries, try again later or lower --concurrency")]
    Remote {
        operation: &'static str,
        location: String,
        detail: String,
    },

    /// The caller was refused, not one object: bad or expired credentials, or a role denied
    /// every object of a bucket. Nothing was committed; the work can be redone once fixed.
    #[error("{operation} on {location} was refused: {detail}; nothing was committed, run it again once fixed")]
    Refused {
        operation: &'static str,
        location: String,
        detail: String,
    },

    /// Another worker holds the lease on this manifest and is bundling it now.
    #[error("{manifest} is being bundled by another worker (its lease {lease} is held for {remaining_seconds} more seconds); nothing was done")]
    Busy {
        manifest: String,
        lease: String,
        remaining_seconds: u64,
    },

    /// The archive's outputs do not account for every object of the manifest: nothing is
    /// committed rather than lose an object.
    #[error("{manifest}: {detail}; nothing was committed, run it again")]
    Incomplete { manifest: String, detail: String },

    /// A write-once record was written by another writer while this attempt ran.
    #[error("{record} was written by another writer while this attempt ran, and records are never replaced; this attempt committed nothing (run it again: it finds the other writer's records)")]
    Superseded { record: String },

    /// Two manifests whose records would have one key.
    #[error("{manifest} would write {record}, which belongs to {owner}: manifests with the same file name share an archive, index and big-object copies; rename this manifest (or bundle it under another --prefix); nothing was written")]
    Collision {
        manifest: String,
        record: String,
        owner: String,
    },

    /// Bundle manifests in place hold other content than this run would write (grouped
    /// before with other options, or by a run racing this one): `group` never replaces one,
    /// since an archive may describe it.
    #[error("{}", manifests_differ(.differing, .this_run, *.written))]
    ManifestsDiffer {
        /// Each manifest, with the options it was grouped with when it recorded them.
        differing: Vec<String>,
        /// This run's options, as on the command line.
        this_run: String,
        /// Manifests this run wrote before it found one (only when another run raced it).
        written: u64,
    },

    /// A state object of incremental grouping cannot be used, or would be replaced.
    #[error("incremental grouping state {state}: {detail}")]
    IncrementalState { state: String, detail: String },

    /// A local file could not be read or written.
    #[error("{location}: {source}")]
    Io {
        location: String,
        source: std::io::Error,
    },

    /// An object asked for by its source key is in no archive.
    #[error("{object}: {detail}")]
    NotArchived { object: String, detail: String },

    /// An archive in a cold class (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier)
    /// read before a restore finished: `advice` names the archive and the `restore` command to
    /// run, or says one is in progress (see `thaw::advice`).
    #[error("{advice}")]
    NeedsRestore { archive: String, advice: String },

    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

fn hint_suffix(failure: &RemoteFailure, verb: &str) -> String {
    match failure {
        RemoteFailure::AccessDenied => format!(
            "; check that your credentials (profile, role) may {verb} it, and --expected-bucket-owner if set"
        ),
        RemoteFailure::NotFound => "; check the bucket and key".to_string(),
        _ => String::new(),
    }
}

fn manifests_differ(differing: &[String], this_run: &str, written: u64) -> String {
    const LISTED: usize = 5;
    let mut listed = differing
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if differing.len() > LISTED {
        listed.push_str(&format!(" and {} more", differing.len() - LISTED));
    }
    let done = match written {
        0 => "no manifest was written".to_string(),
        n => format!("{n} manifest(s) before it were written"),
    };
    format!(
        "{} bundle manifest(s) already exist with other content than this run's ({this_run}): \
         {listed}. A bundle manifest is never replaced, since an archive may describe it; {done}. \
         To group with other options, write the manifests to another place (-p PREFIX or -k \
         KEY); if the old ones were never bundled, delete them and group again",
        differing.len()
    )
}

impl Error {
    pub fn bad_input(location: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::BadInput {
            location: location.into(),
            detail: detail.into(),
        }
    }

    /// A failure while reading `location`: transient ones become [`Error::Remote`].
    pub fn reading(
        operation: &'static str,
        location: impl Into<String>,
        failure: RemoteFailure,
    ) -> Self {
        Self::classified(operation, location.into(), failure, |location, failure| {
            Error::Read { location, failure }
        })
    }

    /// A failure while writing `location`: transient ones become [`Error::Remote`].
    pub fn writing(
        operation: &'static str,
        location: impl Into<String>,
        failure: RemoteFailure,
    ) -> Self {
        Self::classified(operation, location.into(), failure, |location, failure| {
            Error::Write { location, failure }
        })
    }

    /// A RestoreObject that failed.
    pub fn restoring(location: impl Into<String>, failure: RemoteFailure) -> Self {
        Self::classified(
            "RestoreObject",
            location.into(),
            failure,
            |location, failure| Error::RestoreRefused { location, failure },
        )
    }

    fn classified(
        operation: &'static str,
        location: String,
        failure: RemoteFailure,
        permanent: impl FnOnce(String, RemoteFailure) -> Error,
    ) -> Self {
        match failure {
            RemoteFailure::Transient(detail) | RemoteFailure::Throttled(detail) => Error::Remote {
                operation,
                location,
                detail,
            },
            failure @ (RemoteFailure::Credentials(_) | RemoteFailure::ClockSkew(_)) => {
                Error::Refused {
                    operation,
                    location,
                    detail: failure.to_string(),
                }
            }
            failure => permanent(location, failure),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_)
            | Error::BadInput { .. }
            | Error::Collision { .. }
            | Error::ManifestsDiffer { .. }
            | Error::IncrementalState { .. } => ExitCode::BadInput,
            Error::Read { .. } | Error::NeedsRestore { .. } => ExitCode::ReadFailed,
            Error::Write { .. }
            | Error::RestoreRefused { .. }
            | Error::Io { .. }
            | Error::Incomplete { .. } => ExitCode::WriteFailed,
            Error::Remote { .. }
            | Error::Refused { .. }
            | Error::Busy { .. }
            | Error::Superseded { .. } => ExitCode::RemoteFailed,
            Error::NotArchived { .. } => ExitCode::Partial,
            Error::Interrupted => ExitCode::Interrupted,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_read_failures_are_remote_errors_with_exit_code_5() {
        let e = Error::reading(
            "GetObject",
            "s3://b/k",
            RemoteFailure::Transient("SlowDown".into()),
        );
        assert_eq!(e.exit_code(), ExitCode::RemoteFailed);
        assert!(e.to_string().contains("s3://b/k"));
    }

    #[test]
    fn permanent_failures_keep_read_and_write_exit_codes() {
        let r = Error::reading("GetObject", "s3://b/k", RemoteFailure::AccessDenied);
        assert_eq!(r.exit_code(), ExitCode::ReadFailed);
        assert!(r.to_string().contains("credentials"), "{r}");
        let w = Error::writing("PutObject", "s3://b/k", RemoteFailure::NotFound);
        assert_eq!(w.exit_code(), ExitCode::WriteFailed);
    }

    #[test]
    fn refused_credentials_exit_5_and_say_nothing_was_committed() {
        let e = Error::reading(
            "GetObject",
            "s3://b/k",
            RemoteFailure::Credentials("HTTP 400 ExpiredToken".into()),
        );
        assert_eq!(e.exit_code(), ExitCode::RemoteFailed);
        let text = e.to_string();
        assert!(
            text.contains("ExpiredToken") && text.contains("nothing was committed"),
            "{text}"
        );
    }

    /// Fails on the old code, which took a refused request time for a denied object.
    #[test]
    fn a_clock_still_refused_is_the_caller_s_and_exits_5() {
        let e = Error::reading(
            "GetObject",
            "s3://b/k",
            RemoteFailure::ClockSkew("HTTP 403 RequestTimeTooSkewed".into()),
        );
        assert_eq!(e.exit_code(), ExitCode::RemoteFailed);
        let text = e.to_string();
        assert!(
            text.contains("clock") && text.contains("nothing was committed"),
            "{text}"
        );
    }

    #[test]
    fn bad_input_names_the_location() {
        let e = Error::bad_input("s3://inv/manifest.json", "missing field `files`");
        assert_eq!(e.exit_code(), ExitCode::BadInput);
        assert_eq!(
            e.to_string(),
            "bad input in s3://inv/manifest.json: missing field `files`"
        );
    }
}
