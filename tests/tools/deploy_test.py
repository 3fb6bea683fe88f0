#!/usr/bin/env python3
"""Runs deploy/deploy against a moto server with the image build skipped, and checks it.

    tests/tools/deploy_test.py [MOTO_ENDPOINT]      (default: $S3BUNDLER_TEST_MOTO)

* --dry-run prints the ECR and CloudFormation calls and the docker commands and makes no call:
  pointed at a port where nothing listens it still succeeds, and pointed at moto it leaves no
  repository and no stack behind;
* a first run creates the ECR repository (scan on push, the lifecycle policy keeping the last
  N tagged images) and both stacks with the given parameters (the core stack on the compute
  stack's CapacityType), prints their outputs and the next `s3bundler submit` command;
* a second run with another image tag and without the creation-only options updates the core
  stack (ImageTag changed, the other parameters kept) instead of failing; a third identical run
  succeeds too;
* creating the stacks without a required parameter stops before any stack call, naming it;
  so does the new-inventory trigger without --inventory-prefix;
* a fresh account: the ECS service-linked role is created (and found on the next run);
* the S3 gateway endpoint: the subnets' route tables get one, except one that an existing
  endpoint serves, and updates keep the stack's own endpoint (no second one);
* the inventory bucket's EventBridge notifications are turned on, its queue notification kept;
* --destroy deletes the core stack, then the compute stack, keeps the archive bucket (with its
  archives), and a second --destroy finds nothing; --delete-archive-bucket deletes it.
Exits 1 with the reasons when a check fails.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "deploy"
REGION = "us-east-1"
REPOSITORY = "deploy-test-s3bundler"
COMPUTE = "deploy-test-compute"
CORE = "deploy-test-core"

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def client(service, endpoint):
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def deploy(endpoint, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    command = [sys.executable, str(DEPLOY), "--endpoint-url", endpoint, "--region", REGION,
               "--repository", REPOSITORY, "--compute-stack", COMPUTE, "--core-stack", CORE,
               "--poll-seconds", "0.2", "--wait-minutes", "3", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    return done


def show(done):
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


def stack(cfn, name):
    try:
        return cfn.describe_stacks(StackName=name)["Stacks"][0]
    except cfn.exceptions.ClientError:
        return None


def parameters(found):
    """A stack's parameters; list parameters as CloudFormation reports them ("a,b"), which
    moto reports as a Python list's repr."""
    result = {}
    for p in found.get("Parameters", []):
        value = p.get("ParameterValue")
        if isinstance(value, str) and value.startswith("['"):
            value = ",".join(ast.literal_eval(value))
        result[p["ParameterKey"]] = value
    return result


def main(argv):
    endpoint = argv[0] if argv else os.environ.get("S3BUNDLER_TEST_MOTO")
    if not endpoint:
        sys.exit("give the moto endpoint URL as an argument or in S3BUNDLER_TEST_MOTO")
    ec2, ecr, cfn, iam, s3 = (client(s, endpoint) for s in ("ec2", "ecr", "cloudformation", "iam", "s3"))
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.77.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
        for i, zone in enumerate("abc")
    ]
    subnets = ",".join(subnet_ids)
    # Subnet a: the VPC's main route table; b: its own table, no endpoint; c: its own table,
    # already served by an S3 gateway endpoint.
    main_table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                    {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]
    tables = [ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"] for _ in range(2)]
    for table, subnet in zip(tables, subnet_ids[1:]):
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", VpcEndpointType="Gateway",
                            RouteTableIds=[tables[1]])
    # The inventory bucket, with a notification of its own that must be kept.
    s3.create_bucket(Bucket="deploy-test-inventory")
    queue = client("sqs", endpoint).create_queue(QueueName="deploy-test-other")["QueueUrl"]
    queue_arn = client("sqs", endpoint).get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket="deploy-test-inventory", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})
    create = ["--capacity-type", "FARGATE_SPOT", "--vpc-id", vpc, "--subnets", subnets, "--cluster-name", "deploy-test",
              "--source-buckets", "deploy-test-photos,deploy-test-logs", "--inventory-bucket", "deploy-test-inventory",
              "--inventory-prefix", "inventory", "--keep-images", "7", "--core-param", "CreateDashboard=false"]

    # A dry run calls nothing: not even a server where nothing listens is noticed.
    for target in ("http://127.0.0.1:9", endpoint):
        done = deploy(target, "--dry-run", "--image-tag", "t0", *create)
        if check(done.returncode == 0, f"dry run against {target} failed: {show(done)}"):
            for needle in ("would call ecr CreateRepository", "would call ecr PutLifecyclePolicy",
                           "would call cloudformation CreateStack", "would call cloudformation UpdateStack",
                           '"StackName": "deploy-test-compute"', '"StackName": "deploy-test-core"',
                           "would run: docker login --username AWS --password-stdin",
                           "would run: docker buildx build", "--platform linux/amd64,linux/arm64",
                           f"ACCOUNT.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}:t0",
                           "would call s3 CreateBucket", "would call s3 PutObject",
                           '"ExpectedBucketOwner": "ACCOUNT"',
                           "would call iam CreateServiceLinkedRole", "would call ec2 DescribeRouteTables",
                           "would call s3 PutBucketNotificationConfiguration"):
                check(needle in done.stdout, f"dry run does not print {needle!r}: {show(done)}")
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    check(REPOSITORY not in names, f"the dry run created the repository: {names}")
    check(stack(cfn, COMPUTE) is None and stack(cfn, CORE) is None, "the dry run created a stack")

    check(not ecs_service_linked_role(iam), "the dry run created the ECS service-linked role")
    # Creating without a required parameter stops before touching the stacks.
    done = deploy(endpoint, "--skip-image", "--image-tag", "t1", "--capacity-type", "FARGATE_SPOT", "--inventory-prefix", "inventory")
    check(done.returncode == 1 and "needs" in done.stderr and "VpcId" in done.stderr,
          f"a missing VpcId was not reported: {show(done)}")
    check(stack(cfn, COMPUTE) is None, "a stack was created without its required parameters")
    # The trigger without a prefix would group every inventory of a shared bucket.
    without_prefix = [a for a in create if a not in ("--inventory-prefix", "inventory")]
    done = deploy(endpoint, "--skip-image", "--image-tag", "t1", *without_prefix)
    check(done.returncode == 1 and "--inventory-prefix" in done.stderr, f"a missing InventoryPrefix was not reported: {show(done)}")
    check(stack(cfn, COMPUTE) is None, "a stack was created with the trigger and no InventoryPrefix")

    done = deploy(endpoint, "--skip-image", "--image-tag", "t1", *create)
    if not check(done.returncode == 0, f"first deploy failed: {show(done)}"):
        return
    repository = ecr.describe_repositories(repositoryNames=[REPOSITORY])["repositories"][0]
    check(repository["imageScanningConfiguration"]["scanOnPush"], f"no scan on push: {repository}")
    check(repository.get("imageTagMutability") == "IMMUTABLE", f"tags are mutable: {repository}")
    # core.yaml is over CloudFormation's inline limit: it went through the templates bucket.
    buckets = [b["Name"] for b in client("s3", endpoint).list_buckets()["Buckets"]]
    check(any(b.startswith("s3bundler-templates-") for b in buckets), f"no templates bucket: {buckets}")
    policy = ecr.get_lifecycle_policy(repositoryName=REPOSITORY)["lifecyclePolicyText"]
    check('"countNumber": 7' in policy and '"imageCountMoreThan"' in policy, f"lifecycle policy: {policy}")
    check(ecs_service_linked_role(iam), f"no ECS service-linked role: {show(done)}")
    check_endpoints(ec2, vpc, {main_table, tables[0]}, tables[1])
    notifications = s3.get_bucket_notification_configuration(Bucket="deploy-test-inventory")
    # moto keeps EventBridgeConfiguration but does not return it: the put is read from the output.
    check("turned on EventBridge notifications of the inventory bucket deploy-test-inventory" in done.stdout
          and '"EventBridgeConfiguration": {}' in done.stdout and len(notifications.get("QueueConfigurations", [])) == 1,
          f"inventory bucket notifications: {notifications}: {show(done)}")
    compute, core = stack(cfn, COMPUTE), stack(cfn, CORE)
    check(compute and compute["StackStatus"] == "CREATE_COMPLETE", f"compute stack: {compute}")
    check(core and core["StackStatus"] == "CREATE_COMPLETE", f"core stack: {core}")
    if not (compute and core):
        return
    expected_compute = {"CapacityType": "FARGATE_SPOT", "VpcId": vpc, "Subnets": subnets, "ClusterName": "deploy-test"}
    expected_core = {"CapacityType": "FARGATE_SPOT", "ComputeStackName": COMPUTE, "RepositoryName": REPOSITORY,
                     "ImageTag": "t1", "SourceBuckets": "deploy-test-photos,deploy-test-logs",
                     "InventoryBucket": "deploy-test-inventory", "CreateDashboard": "false"}
    for found, expected in ((compute, expected_compute), (core, expected_core)):
        actual = parameters(found)
        for key, value in expected.items():
            check(actual.get(key) == value, f"{found['StackName']} {key} is {actual.get(key)!r}, not {value!r}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in core.get("Outputs", [])}
    for key in ("ArchiveBucketName", "ManifestQueueUrl", "GrouperTaskDefinition"):
        check(key in outputs and f"{key}" in done.stdout and outputs[key] in done.stdout,
              f"output {key} not printed: {show(done)}")
    check("s3bundler submit --cluster deploy-test " in done.stdout and "--capacity-provider FARGATE_SPOT" in done.stdout,
          f"next command not printed: {show(done)}")
    check("CREATE_COMPLETE" in done.stdout, f"stack events not printed: {show(done)}")

    # Again, with a new image and only what changes: an update, not a failure.
    done = deploy(endpoint, "--skip-image", "--image-tag", "t2")
    if check(done.returncode == 0, f"second deploy failed: {show(done)}"):
        core = stack(cfn, CORE)
        actual = parameters(core)
        check(actual.get("ImageTag") == "t2", f"ImageTag not updated: {actual}")
        check(actual.get("SourceBuckets") == expected_core["SourceBuckets"] and actual.get("CapacityType") == "FARGATE_SPOT",
              f"parameters not given were not kept: {actual}")
        check(core["StackStatus"] == "UPDATE_COMPLETE", f"core stack after the update: {core['StackStatus']}")
        check(parameters(stack(cfn, COMPUTE)).get("VpcId") == vpc, "the compute stack lost its VpcId")
        check("updating stack" in done.stdout and "ArchiveBucketName" in done.stdout, f"update output: {show(done)}")
    done = deploy(endpoint, "--skip-image", "--image-tag", "t2")
    check(done.returncode == 0, f"third (unchanged) deploy failed: {show(done)}")
    check("AWSServiceRoleForECS exists" in done.stdout, f"the existing service-linked role was not found: {show(done)}")
    check_endpoints(ec2, vpc, {main_table, tables[0]}, tables[1])
    check_destroy(endpoint, cfn, s3, outputs["ArchiveBucketName"], create)


def ecs_service_linked_role(iam):
    """The ECS service-linked role (moto names it after the service's lowercase name)."""
    return iam.list_roles(PathPrefix="/aws-service-role/ecs.amazonaws.com/")["Roles"]


def check_endpoints(ec2, vpc, expected, served):
    """One S3 gateway endpoint for the subnets' route tables that had none, beside the existing one."""
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    tables = sorted(sorted(e.get("RouteTableIds", [])) for e in endpoints if e["ServiceName"].endswith(".s3"))
    check(tables == sorted([sorted(expected), [served]]), f"S3 gateway endpoints' route tables: {tables}, expected {sorted(expected)} and [{served}]")


def check_destroy(endpoint, cfn, s3, bucket, create):
    """--destroy: both stacks gone, the archive bucket kept with its archive; then recreated and
    destroyed with --delete-archive-bucket: the bucket gone too."""
    done = deploy(endpoint, "--destroy", "--dry-run")
    check(done.returncode == 0 and all(n in done.stdout for n in (
        "would call ecs UpdateService", "would call autoscaling UpdateAutoScalingGroup", "would call cloudformation DeleteStack")),
        f"destroy dry run: {show(done)}")
    check(stack(cfn, CORE)["StackStatus"].endswith("COMPLETE") and "DELETE" not in stack(cfn, CORE)["StackStatus"],
          "the destroy dry run deleted the core stack")
    s3.put_object(Bucket=bucket, Key="archives/a.tar", Body=b"archive")
    done = deploy(endpoint, "--destroy")
    if not check(done.returncode == 0, f"destroy failed: {show(done)}"):
        return
    for name in (CORE, COMPUTE):
        found = stack(cfn, name)
        check(found is None or found["StackStatus"] == "DELETE_COMPLETE", f"{name} not deleted: {found and found['StackStatus']}")
    check(done.stdout.index(f"deleting stack {CORE}") < done.stdout.index(f"deleting stack {COMPUTE}"),
          f"the compute stack was deleted before the core stack: {show(done)}")
    check(f"kept the archive bucket {bucket}" in done.stdout, f"archive bucket not reported kept: {show(done)}")
    check(s3.get_object(Bucket=bucket, Key="archives/a.tar")["Body"].read() == b"archive", "the archive is gone")
    done = deploy(endpoint, "--destroy")
    check(done.returncode == 0 and "nothing to delete" in done.stdout, f"second destroy: {show(done)}")
    done = deploy(endpoint, "--skip-image", "--image-tag", "t3", *create)
    if not check(done.returncode == 0, f"deploy after destroy failed: {show(done)}"):
        return
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack(cfn, CORE).get("Outputs", [])}
    s3.put_object(Bucket=outputs["ArchiveBucketName"], Key="archives/b.tar", Body=b"archive")
    done = deploy(endpoint, "--destroy", "--delete-archive-bucket")
    check(done.returncode == 0 and f"deleted the archive bucket {outputs['ArchiveBucketName']}" in done.stdout,
          f"destroy --delete-archive-bucket: {show(done)}")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check(outputs["ArchiveBucketName"] not in buckets, f"the archive bucket is still there: {buckets}")


if __name__ == "__main__":
    main(sys.argv[1:])
    for failure in failures:
        print(f"ERROR: deploy_test: {failure}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print("deploy_test: OK (dry run calls nothing; service-linked role, S3 endpoint, EventBridge on the inventory bucket; "
          "both stacks created, updated, re-run, destroyed)")
