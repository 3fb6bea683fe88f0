//! `submit` against moto's ECS: one task per inventory manifest, with the container command
//! overridden, and bad lines reported without stopping the others.

mod common;

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
use common::*;

/// A cluster and a Fargate grouper task definition; returns their names.
async fn grouper(ecs: &aws_sdk_ecs::Client) -> (String, String) {
    let cluster = s3bundler_testkit::unique_name("cluster");
    let family = s3bundler_testkit::unique_name("grouper");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    ecs.register_task_definition()
        .family(&family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("s3bundler")
                .image("s3bundler:latest")
                .memory(512)
                .command("--help")
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    (cluster, family)
}

#[tokio::test]
async fn submit_starts_one_grouper_task_per_manifest_and_reports_bad_lines() {
    let endpoint = moto::endpoint();
    let ecs = s3bundler_testkit::ecs_client(endpoint);
    let (cluster, family) = grouper(&ecs).await;
    let (subnets, groups) = moto::default_network(endpoint).await;
    assert!(!subnets.is_empty() && !groups.is_empty());
    let list = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        list.path(),
        "# two inventories and a typo\ns3://inv/a/manifest.json\nhttps://not-s3\n\ns3://inv/b c/manifest.json\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file = list.path().display().to_string();
    let out = s3bundler(
        endpoint,
        &[
            "submit",
            "--cluster",
            &cluster,
            "--task-definition",
            &family,
            "-f",
            &file,
            "--launch-type",
            "FARGATE",
            "--subnets",
            &subnets[0],
            "--security-groups",
            &groups[0],
            "--json",
            "--",
            "-b",
            "manifests-bucket",
            "-p",
            "manifests",
            "-c",
            "65000",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "one line failed: {out:?}");
    let report = out.json();
    let submitted = report["submitted"].as_array().cloned().unwrap_or_default();
    assert_eq!(submitted.len(), 2, "{report}");
    assert_eq!(report["failed"][0]["line"], 3, "{report}");
    assert!(out.stderr.contains("ERROR line 3"), "{}", out.stderr);

    let arns: Vec<String> = submitted
        .iter()
        .map(|s| s["task_arn"].as_str().unwrap_or_default().to_string())
        .collect();
    let tasks = ecs
        .describe_tasks()
        .cluster(&cluster)
        .set_tasks(Some(arns))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut commands: Vec<Vec<String>> = tasks
        .tasks()
        .iter()
        .map(|task| {
            let overrides = task
                .overrides()
                .map(|o| o.container_overrides())
                .unwrap_or_default();
            assert_eq!(overrides.len(), 1);
            assert_eq!(overrides[0].name(), Some("s3bundler"));
            assert_eq!(task.started_by(), Some("s3bundler-submit"));
            overrides[0].command().to_vec()
        })
        .collect();
    commands.sort();
    let expected = |uri: &str| -> Vec<String> {
        [
            "group",
            "-b",
            "manifests-bucket",
            "-p",
            "manifests",
            "-c",
            "65000",
            "-m",
            uri,
        ]
        .map(String::from)
        .to_vec()
    };
    assert_eq!(
        commands,
        vec![
            expected("s3://inv/a/manifest.json"),
            expected("s3://inv/b c/manifest.json")
        ]
    );
}

#[tokio::test]
async fn submit_refuses_bad_group_options_before_starting_anything() {
    let endpoint = moto::endpoint();
    let ecs = s3bundler_testkit::ecs_client(endpoint);
    let (cluster, family) = grouper(&ecs).await;
    let out = s3bundler(
        endpoint,
        &[
            "submit",
            "--cluster",
            &cluster,
            "--task-definition",
            &family,
            "-f",
            "/dev/null",
            "--",
            "-b",
            "mb",
            "--no-such-option",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("group options"), "{}", out.stderr);
    let running = ecs
        .list_tasks()
        .cluster(&cluster)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(running.task_arns().is_empty());
}
