//! The one place that builds AWS clients from the common options: the standard credential and
//! region chain, custom endpoints (path-style unless told otherwise), retries, timeouts.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::ecs::Ecs;
use crate::error::{Error, Result};
use crate::request_timeout::{parse_seconds, AttemptTimeouts, DEFAULT_REQUEST_TIMEOUT};
use crate::s3::{Sse, WriteSettings, S3};
use crate::sqs::Queue;

/// Options every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsOptions {
    /// Send requests to this S3/SQS-compatible endpoint instead of AWS (also AWS_ENDPOINT_URL,
    /// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_SQS).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// AWS region (default: the standard chain: AWS_REGION, profile, instance metadata).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Named profile from the shared config and credentials files.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Use virtual-hosted-style addressing even with a custom endpoint.
    #[arg(long, global = true)]
    pub virtual_hosted_style: bool,
    /// Server-side encryption for everything written: AES256 or aws:kms (default: the bucket's).
    #[arg(long, global = true, value_name = "AES256|aws:kms")]
    pub sse: Option<Sse>,
    /// KMS key for --sse aws:kms (default: the AWS managed key).
    #[arg(long, global = true, value_name = "KEY")]
    pub sse_kms_key_id: Option<String>,
    /// Send this account ID with every S3 request, so a bucket owned by another account is
    /// never read or written.
    #[arg(long, global = true, value_name = "ACCOUNT")]
    pub expected_bucket_owner: Option<String>,
    /// SHA-256-sign uploaded bodies: `auto` signs them only over plain HTTP. Over HTTPS, TLS and
    /// the CRC32 checksum S3 verifies already protect them (AWS's Java and Go SDKs skip it too).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = PayloadSigning::Auto,
        env = "S3BUNDLER_SIGN_PAYLOAD"
    )]
    pub sign_payload: PayloadSigning,
    /// How long a request that keeps failing transiently (503 SlowDown, 5xx, timeouts, dropped
    /// connections) is tried again, with backoff, before it counts as failed: seconds, or 90s,
    /// 5m, 1h. A throttling storm at fleet scale is normal; only after this does an object go
    /// to the DLQ as `Retry`.
    #[arg(long, global = true, value_name = "DURATION", default_value = "5m",
          value_parser = crate::retry::parse_duration, env = "S3BUNDLER_RETRY_FOR")]
    pub retry_for: std::time::Duration,
    /// Seconds one attempt of an AWS request may wait for its answer before it is retried,
    /// plus one second per MiB it uploads or S3 copies (stalled bodies are cut after seconds
    /// anyway).
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        value_parser = parse_seconds,
        default_value = "60",
        env = "S3BUNDLER_REQUEST_TIMEOUT"
    )]
    pub request_timeout: std::time::Duration,
}

impl Default for AwsOptions {
    /// What an empty command line gives.
    fn default() -> Self {
        AwsOptions {
            endpoint_url: None,
            region: None,
            profile: None,
            virtual_hosted_style: false,
            sse: None,
            sse_kms_key_id: None,
            expected_bucket_owner: None,
            sign_payload: PayloadSigning::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_for: crate::retry::RetryPolicy::default().max_elapsed,
        }
    }
}

/// When upload bodies are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadSigning {
    #[default]
    Auto,
    Always,
    Never,
}

impl PayloadSigning {
    /// Whether to sign, for requests to `endpoint` (`None`: AWS's, which is HTTPS).
    fn signs(self, endpoint: Option<&str>) -> bool {
        match self {
            PayloadSigning::Always => true,
            PayloadSigning::Never => false,
            PayloadSigning::Auto => {
                endpoint.is_some_and(|url| !url.to_ascii_lowercase().starts_with("https://"))
            }
        }
    }
}

/// The S3 endpoint requests go to, when it is not AWS's.
fn custom_s3_endpoint(option: Option<&str>) -> Option<String> {
    option.map(str::to_string).or_else(|| {
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    })
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

impl AwsOptions {
    /// Rejects combinations clap cannot express.
    pub fn check(&self) -> Result<()> {
        if self.sse_kms_key_id.is_some() && self.sse != Some(Sse::Kms) {
            return Err(Error::Usage(
                "--sse-kms-key-id is only used with --sse aws:kms: add --sse aws:kms to encrypt \
                 with that key, or leave --sse-kms-key-id out to use the bucket's default \
                 encryption"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Sets each request's attempt timeout (see [`crate::request_timeout`]).
    fn attempt_timeouts(&self) -> AttemptTimeouts {
        AttemptTimeouts {
            base: self.request_timeout,
        }
    }

    /// True when requests go to a custom endpoint, where path-style addressing is the default.
    fn custom_endpoint(&self) -> bool {
        self.endpoint_url.is_some() || env_set("AWS_ENDPOINT_URL") || env_set("AWS_ENDPOINT_URL_S3")
    }

    /// Loads the shared SDK configuration through the standard chain.
    pub async fn load(&self) -> SdkConfig {
        // The attempt timeout is raised per request by [`AttemptTimeouts`]; this is the floor
        // for any client built from the shared configuration.
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .operation_attempt_timeout(self.request_timeout)
                .build(),
        );
        if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() {
            // Batch jobs against throttled prefixes want more patience than the SDK's 3 attempts.
            loader = loader.retry_config(RetryConfig::standard().with_max_attempts(6));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            tracing::debug!("no region configured; using us-east-1");
            return config
                .into_builder()
                .region(Region::from_static("us-east-1"))
                .build();
        }
        config
    }

    pub fn s3(&self, config: &SdkConfig) -> S3 {
        let force_path_style = self.custom_endpoint() && !self.virtual_hosted_style;
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(force_path_style)
            .interceptor(self.attempt_timeouts())
            .build();
        let s3 = S3::new(
            aws_sdk_s3::Client::from_conf(s3_config),
            WriteSettings {
                sse: self.sse,
                sse_kms_key_id: self.sse_kms_key_id.clone(),
                expected_bucket_owner: self.expected_bucket_owner.clone(),
                sign_payload: self
                    .sign_payload
                    .signs(custom_s3_endpoint(self.endpoint_url.as_deref()).as_deref()),
                retry: crate::retry::RetryPolicy::for_duration(self.retry_for),
            },
        );
        match self.lean_objects(config, force_path_style) {
            Ok(lean) => s3.with_lean(lean),
            Err(why) => {
                tracing::debug!("every GET goes through the SDK: {why}");
                s3
            }
        }
    }

    /// The lean GET path, from the same credentials, region and endpoint settings.
    fn lean_objects(
        &self,
        config: &SdkConfig,
        force_path_style: bool,
    ) -> std::result::Result<crate::get_object::LeanObjects, String> {
        let provider = config
            .credentials_provider()
            .ok_or("no credentials provider")?;
        let settings = crate::get_object::EndpointSettings {
            region: config
                .region()
                .map_or("us-east-1".to_string(), |r| r.to_string()),
            endpoint_url: custom_s3_endpoint(self.endpoint_url.as_deref()),
            force_path_style,
            use_fips: config.use_fips().unwrap_or(false),
            use_dual_stack: config.use_dual_stack().unwrap_or(false),
        };
        let get = crate::get_object::LeanGet::new(provider, self.request_timeout)?;
        Ok(crate::get_object::LeanObjects::new(get, settings))
    }

    pub fn ecs(&self, config: &SdkConfig) -> Ecs {
        let ecs_config = aws_sdk_ecs::config::Builder::from(config)
            .interceptor(self.attempt_timeouts())
            .build();
        Ecs::new(aws_sdk_ecs::Client::from_conf(ecs_config))
    }

    /// Resolves a queue name or URL.
    pub async fn queue(&self, config: &SdkConfig, name_or_url: &str) -> Result<Queue> {
        let sqs_config = aws_sdk_sqs::config::Builder::from(config)
            .interceptor(self.attempt_timeouts())
            .build();
        Queue::resolve(aws_sdk_sqs::Client::from_conf(sqs_config), name_or_url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails on the old code, which accepted the key without --sse aws:kms and wrote with the
    /// bucket's default encryption instead.
    #[test]
    fn a_kms_key_without_sse_kms_is_a_usage_error() {
        let with_key = |sse| AwsOptions {
            sse,
            sse_kms_key_id: Some("alias/archive".into()),
            ..AwsOptions::default()
        };
        for sse in [None, Some(Sse::Aes256)] {
            let error = with_key(sse).check().err();
            assert!(
                matches!(&error, Some(Error::Usage(m)) if m.contains("--sse aws:kms")),
                "{error:?}"
            );
        }
        assert!(with_key(Some(Sse::Kms)).check().is_ok());
        assert!(AwsOptions::default().check().is_ok());
    }

    #[test]
    fn the_default_request_timeout_is_the_documented_one() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Options {
            #[command(flatten)]
            aws: AwsOptions,
        }
        let parsed = Options::try_parse_from(["s3bundler"]).map(|o| o.aws.request_timeout);
        assert_eq!(parsed.ok(), Some(DEFAULT_REQUEST_TIMEOUT));
        assert_eq!(
            AwsOptions::default().request_timeout,
            DEFAULT_REQUEST_TIMEOUT
        );
    }

    #[test]
    fn bodies_are_signed_only_over_plain_http_unless_told() {
        let auto = PayloadSigning::Auto;
        assert!(!auto.signs(None), "AWS endpoints are HTTPS");
        assert!(!auto.signs(Some("HTTPS://s3.example.com")));
        assert!(auto.signs(Some("http://127.0.0.1:9000")));
        assert!(PayloadSigning::Always.signs(None));
        assert!(!PayloadSigning::Never.signs(Some("http://127.0.0.1:9000")));
    }
}
