//! ECS access for `submit`: which container a task definition runs, and RunTask with the
//! container's command overridden.

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    LaunchType, NetworkConfiguration, TaskOverride,
};

use crate::error::{Error, RemoteFailure, Result};

use aws_sdk_ecs::error::ProvideErrorMetadata;

fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: aws_sdk_ecs::error::SdkError<E, aws_sdk_ecs::config::http::HttpResponse>,
) -> RemoteFailure {
    let status = error.raw_response().map(|r| r.status().as_u16());
    match error.code() {
        Some("ClusterNotFoundException") => RemoteFailure::NotFound,
        Some("ClientException") | Some("InvalidParameterException") => {
            RemoteFailure::Permanent(error.message().unwrap_or("rejected").to_string())
        }
        _ => crate::s3::classify(&error, status),
    }
}

/// Where and how tasks run.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub cluster: String,
    pub task_definition: String,
    pub launch_type: Option<String>,
    pub capacity_provider: Option<String>,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
}

#[derive(Clone, Debug)]
pub struct Ecs {
    client: aws_sdk_ecs::Client,
}

impl Ecs {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Ecs { client }
    }

    /// The name of the task definition's first container: the one whose command is replaced.
    pub async fn first_container(&self, task_definition: &str) -> Result<String> {
        let location = format!("task definition {task_definition}");
        let output = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| Error::reading("DescribeTaskDefinition", location.clone(), failure(e)))?;
        output
            .task_definition()
            .and_then(|t| t.container_definitions().first())
            .and_then(|c| c.name())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::bad_input(location, "it defines no named container; pass --container")
            })
    }

    /// Starts one task running `command` in `container`; returns its ARN.
    pub async fn run_task(
        &self,
        placement: &Placement,
        container: &str,
        command: Vec<String>,
        started_by: &str,
    ) -> std::result::Result<String, String> {
        let mut request = self
            .client
            .run_task()
            .cluster(&placement.cluster)
            .task_definition(&placement.task_definition)
            .count(1)
            .started_by(started_by)
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(container)
                            .set_command(Some(command))
                            .build(),
                    )
                    .build(),
            );
        if let Some(launch_type) = &placement.launch_type {
            request = request.launch_type(LaunchType::from(launch_type.as_str()));
        }
        if let Some(provider) = &placement.capacity_provider {
            request = request.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(provider)
                    .weight(1)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        if !placement.subnets.is_empty() {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(placement.subnets.clone()))
                .set_security_groups(Some(placement.security_groups.clone()))
                .assign_public_ip(if placement.assign_public_ip {
                    AssignPublicIp::Enabled
                } else {
                    AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| e.to_string())?;
            request = request.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        let output = request.send().await.map_err(|e| failure(e).to_string())?;
        if let Some(arn) = output.tasks().first().and_then(|t| t.task_arn()) {
            return Ok(arn.to_string());
        }
        let reasons: Vec<String> = output
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f.reason().unwrap_or("no reason given"),
                    f.detail().unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect();
        Err(if reasons.is_empty() {
            "RunTask started no task and gave no reason".to_string()
        } else {
            reasons.join("; ")
        })
    }
}
