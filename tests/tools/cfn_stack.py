#!/usr/bin/env python3
"""Creates the s3bundler core stack in moto's CloudFormation and prints its outputs as JSON.

Usage:
    cfn_stack.py [ENDPOINT_URL] [--stack-name NAME] [--template FILE] [--region REGION]
                 [--param KEY=VALUE]... [--check-notification] [--compute FARGATE_SPOT|EC2_SPOT]
                 [--check-inventory-rule] [--check-kms] [--bundler BINARY]

ENDPOINT_URL defaults to $S3BUNDLER_TEST_MOTO (e.g. http://127.0.0.1:5055). The parameters
default to values that create in moto (CapacityType=NONE, a source and an inventory bucket
named test-source and test-inventory); --param overrides any of them.

On success prints one JSON object on stdout: the stack outputs (ArchiveBucketName,
ManifestQueueUrl, DeadLetterQueueUrl, ...) plus "StackName" and "StackId". With
--check-notification it then puts objects that must reach the manifest queue (keys ending in
.index under the manifest prefix, written directly or by a server-side copy) and objects that
must not (staging, .dlq, archive indexes, other prefixes) and adds "NotificationDelivered"
(true when exactly the former arrived) and "NotificationKeys". moto's CloudFormation ignores
the bucket's NotificationConfiguration, so when the bucket has none the same configuration is
put through the S3 API first ("NotificationReplayedThroughApi": true).
With --param ExistingArchiveBucket=NAME the bucket is created in moto before the stack.
With --check-inventory-rule (a stack with a service: the rule exists only then) it reads the
EventBridge rule that groups new inventories back from moto, matches sample S3 events against
its pattern and applies its input transformer with moto's EventBridge code (moto runs no ECS
targets), and checks that the command it gives the grouper task is the one `s3bundler submit`
gives ("InventoryRule"); --bundler then runs the grouper with that command.
With --check-kms it first creates three KMS keys in moto and passes them as InventoryKmsKeyArns,
SourceKmsKeyArns and ArchiveKmsKeyArn, then reads the policies back from moto's IAM (intrinsics
resolved) and checks that each role and the operator KMS policies (VerifyKmsPolicy,
PruneKmsPolicy, created only with ArchiveKmsKeyArn; outputs VerifyKmsPolicyArn,
PruneKmsPolicyArn) grant exactly the KMS actions expected on exactly those keys, each statement
conditioned on kms:ViaService s3.REGION.amazonaws.com ("Kms"; moto evaluates no conditions and
no KMS, so this is about the documents the stack creates).
With --bundler BINARY it runs the whole pipeline with that s3bundler binary against moto: a
20-object CSV inventory, the grouper command as `s3bundler submit` runs it (`group` +
GroupOptions + `-m`), the S3 event of the manifest on the queue, then the bundler task
definition's container command (from moto's ECS), and checks that every object is in an index
and the queue is empty ("BundlerRun").
On failure prints the failed resources and their reasons on stderr and exits 1.
"""

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from urllib.parse import quote_plus, unquote_plus
from pathlib import Path

import boto3
import botocore.exceptions

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = ROOT / "deploy" / "cloudformation" / "core.yaml"
DEFAULT_PARAMETERS = {
    "ImageTag": "test",
    "SourceBuckets": "test-source",
    "InventoryBucket": "test-inventory",
    "CapacityType": "NONE",
}
TERMINAL_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", nargs="?", default=os.environ.get("S3BUNDLER_TEST_MOTO"))
    parser.add_argument("--stack-name", default="s3bundler-test")
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the stack")
    parser.add_argument("--check-notification", action="store_true")
    parser.add_argument("--check-inventory-rule", action="store_true")
    parser.add_argument("--check-kms", action="store_true")
    parser.add_argument(
        "--bundler",
        metavar="BINARY",
        help="then run the bundler task definition's command with this s3bundler binary "
        "against moto: a manifest of 20 objects goes through the notification, the queue and "
        "the worker to an archive and an index (adds \"BundlerRun\")",
    )
    parser.add_argument(
        "--compute",
        choices=["FARGATE_SPOT", "EC2_SPOT"],
        help="first create a VPC, two subnets and the compute stack (compute.yaml) with this "
        "CapacityType, and wire the core stack to it (moto cannot create the EC2_SPOT capacity "
        "provider, so only FARGATE_SPOT gets a core stack)",
    )
    args = parser.parse_args(argv)
    if not args.endpoint:
        parser.error("give the moto endpoint URL as an argument or in S3BUNDLER_TEST_MOTO")
    params = dict(DEFAULT_PARAMETERS)
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--param {item!r}: expected KEY=VALUE")
        params[key] = value
    args.parameters = params
    return args


def client(service, args):
    # moto accepts any credentials; never pick up a real profile by accident.
    return boto3.client(
        service,
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def fail(message):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(1)


def failed_events(cfn, stack_id):
    events = cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
    return [
        f"{e['LogicalResourceId']} ({e['ResourceType']}): {e.get('ResourceStatusReason', '')}"
        for e in events
        if e["ResourceStatus"].endswith("FAILED")
    ]


def create_stack(args, stack_name, template, parameters):
    cfn = client("cloudformation", args)
    body = Path(template).read_text()
    try:
        response = cfn.create_stack(
            StackName=stack_name,
            TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
    except botocore.exceptions.ClientError as error:
        fail(f"CreateStack {stack_name} from {template}: {error}")
    stack_id = response["StackId"]
    deadline = time.monotonic() + args.timeout
    while True:
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        status = stack["StackStatus"]
        if status in TERMINAL_OK:
            break
        if not status.endswith("IN_PROGRESS"):
            reasons = failed_events(cfn, stack_id) or [stack.get("StackStatusReason", "")]
            fail(f"stack {stack_name} ended in {status}:\n  " + "\n  ".join(reasons))
        if time.monotonic() > deadline:
            fail(f"stack {stack_name} still {status} after {args.timeout:.0f}s")
        time.sleep(0.5)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    outputs["StackName"] = stack_name
    outputs["StackId"] = stack_id
    return outputs


def create_compute_stack(args):
    """A VPC with two subnets and the compute stack; returns the compute stack's name."""
    ec2 = client("ec2", args)
    vpc = ec2.create_vpc(CidrBlock="10.88.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.88.{i}.0/24", AvailabilityZone=f"{args.region}{zone}"
        )["Subnet"]["SubnetId"]
        for i, zone in enumerate("ab")
    ]
    name = f"{args.stack_name}-compute"
    parameters = {
        "CapacityType": args.compute,
        "VpcId": vpc,
        "Subnets": ",".join(subnets),
        "ClusterName": f"{args.stack_name}-cluster",
    }
    create_stack(args, name, DEFAULT_TEMPLATE.with_name("compute.yaml"), parameters)
    return name


def replay_notification(s3, outputs):
    """moto's CloudFormation creates the bucket but ignores its NotificationConfiguration (and
    LifecycleConfiguration, PublicAccessBlockConfiguration, VersioningConfiguration), so the
    template's notification is put through the S3 API: same event, prefix and suffix."""
    s3.put_bucket_notification_configuration(
        Bucket=outputs["ArchiveBucketName"],
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": outputs["ManifestQueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [
                                {"Name": "prefix", "Value": outputs["ManifestPrefix"] + "/"},
                                {"Name": "suffix", "Value": ".index"},
                            ]
                        }
                    },
                }
            ]
        },
    )


def received_keys(sqs, queue_url):
    """Drains the queue; returns the object keys of the S3 events (URL-decoded)."""
    keys = []
    idle = 0
    while idle < 2:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        idle = 0 if messages else idle + 1
        for message in messages:
            body = json.loads(message["Body"])
            for record in body.get("Records", []):
                keys.append(unquote_plus(record["s3"]["object"]["key"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return keys


def check_notification(args, outputs):
    """Puts objects that must and must not notify the manifest queue; returns what happened."""
    s3 = client("s3", args)
    sqs = client("sqs", args)
    bucket = outputs["ArchiveBucketName"]
    queue_url = outputs["ManifestQueueUrl"]
    configured = s3.get_bucket_notification_configuration(Bucket=bucket)
    replayed = not configured.get("QueueConfigurations")
    if replayed:
        replay_notification(s3, outputs)
    received_keys(sqs, queue_url)  # the s3:TestEvent sent when a configuration is put
    manifests = outputs["ManifestPrefix"]
    archives = outputs["ArchivePrefix"]
    expected = [f"{manifests}/cfn-check-manifest.0.index", f"{manifests}/cfn-check-manifest.1.index"]
    quiet = [
        f"{manifests}/_staging/cfn-check-manifest.1/0.partial",
        f"{manifests}/cfn-check-manifest.0.index.dlq",
        f"{archives}/abcdef/test-source/cfn-check-manifest.0.index",
        "elsewhere/cfn-check-manifest.0.index",
    ]
    for key in [expected[0]] + quiet:
        s3.put_object(Bucket=bucket, Key=key, Body=b"test-source,a,1\n")
    # A manifest put in place by a server-side copy from a staging area arrives too.
    s3.copy_object(Bucket=bucket, Key=expected[1], CopySource={"Bucket": bucket, "Key": quiet[0]})
    keys = received_keys(sqs, queue_url)
    return {
        "NotificationReplayedThroughApi": replayed,
        "NotificationDelivered": sorted(keys) == sorted(expected),
        "NotificationKeys": keys,
    }


def put_inventory(s3, source, inventory_bucket, objects):
    """A one-file CSV S3 Inventory report of `objects` ({key: body}); returns its manifest URI."""
    rows = []
    for key, body in objects.items():
        etag = hashlib.md5(body).hexdigest()
        fields = [source, quote_plus(key, safe="/"), str(len(body)), "2026-11-22T00:00:00.000Z", etag, "STANDARD"]
        rows.append(",".join(f'"{f}"' for f in fields))
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    folder = f"inventory/{source}/cfn-stack/2026-11-22T01-00Z"
    data_key = f"inventory/{source}/cfn-stack/data/cfn-stack.csv.gz"
    s3.put_object(Bucket=inventory_bucket, Key=data_key, Body=data)
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{inventory_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": "1795568400000",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass",
        "files": [{"key": data_key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}],
    }
    s3.put_object(Bucket=inventory_bucket, Key=f"{folder}/manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{inventory_bucket}/{folder}/manifest.json"


def s3_event(bucket, key):
    """An S3 'Object Created' event as EventBridge delivers it."""
    return {
        "version": "0", "id": "00000000-0000-0000-0000-000000000000", "detail-type": "Object Created",
        "source": "aws.s3", "account": "123456789012", "time": "2026-11-22T01:00:00Z",
        "region": "us-east-1", "resources": [f"arn:aws:s3:::{bucket}"], "ingestion-time": "2026-11-22T01:00:01Z",
        "detail": {
            "version": "0", "bucket": {"name": bucket},
            "object": {"key": key, "size": 1, "etag": "0"}, "reason": "PutObject",
        },
    }


def check_inventory_rule(args, outputs, inventory_uri=None):
    """The rule's pattern and target as moto stored them, evaluated with moto's EventBridge
    code: which keys start a grouper, and the command the task gets."""
    from moto.events.models import EventPattern
    from moto.events.utils import EventTemplateParser

    events = client("events", args)
    rule_name = outputs.get("NewInventoryRuleName")
    if not rule_name:
        fail("the stack has no NewInventoryRuleName output (it needs a compute stack)")
    rule = events.describe_rule(Name=rule_name)
    targets = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    pattern = EventPattern.load(rule["EventPattern"])
    inventory = args.parameters["InventoryBucket"]
    prefix = args.parameters.get("InventoryPrefix", "")
    folder = f"{prefix}{'/' if prefix else ''}test-source/s3bundler/2026-11-22T01-00Z"
    inventory_uri = inventory_uri or f"s3://{inventory}/{folder}/manifest.json"
    bucket, _, key = inventory_uri[len("s3://"):].partition("/")
    quiet = [
        (inventory, f"{folder}/manifest.checksum"),
        (inventory, f"{prefix}{'/' if prefix else ''}test-source/s3bundler/data/x.csv.gz"),
        ("another-bucket", key),
    ]
    result = {
        "Rule": rule_name,
        "ManifestMatches": pattern.matches_event(s3_event(bucket, key)),
        "OthersIgnored": not any(pattern.matches_event(s3_event(b, k)) for b, k in quiet),
        "TargetsGrouper": [t.get("EcsParameters", {}).get("TaskDefinitionArn") for t in targets]
        == [outputs["GrouperTaskDefinition"]],
    }
    transformer = targets[0].get("InputTransformer", {}) if targets else {}
    overrides = EventTemplateParser.parse(
        input_template=transformer.get("InputTemplate"),
        input_paths_map=transformer.get("InputPathsMap", {}),
        event=s3_event(bucket, key),
    )
    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    containers = overrides.get("containerOverrides", [])
    command = containers[0].get("command") if containers else None
    result["Command"] = command
    result["CommandIsSubmits"] = command == ["group", *outputs["GroupOptions"].split(), "-m", inventory_uri]
    result["Ok"] = all(result[k] for k in ("ManifestMatches", "OthersIgnored", "TargetsGrouper", "CommandIsSubmits"))
    return result


def create_kms_keys(args):
    """Three moto KMS keys: the stack's InventoryKmsKeyArns, SourceKmsKeyArns, ArchiveKmsKeyArn."""
    kms = client("kms", args)
    return {
        name: kms.create_key(Description=f"s3bundler {name}")["KeyMetadata"]["Arn"]
        for name in ("InventoryKmsKeyArns", "SourceKmsKeyArns", "ArchiveKmsKeyArn")
    }


def policy_document(document):
    """A policy document as moto's IAM returns it: a dict, JSON, or (an inline policy created by
    its CloudFormation) a Python repr."""
    if isinstance(document, dict):
        return document
    try:
        return json.loads(document)
    except json.JSONDecodeError:
        import ast

        return ast.literal_eval(document)


def kms_grants(document):
    """{(action, key ARN): condition} of the document's kms:* statements."""
    grants = {}
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement is None:  # moto keeps an !If giving AWS::NoValue as null
            continue
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        for action in actions if isinstance(actions, list) else [actions]:
            if action.startswith("kms:"):
                for resource in resources if isinstance(resources, list) else [resources]:
                    grants[(action, resource)] = statement.get("Condition")
    return grants


def check_kms(args, outputs, keys):
    """The KMS statements of the roles and of the operator KMS policies, as moto created them."""
    iam = client("iam", args)
    inventory, source, archive = keys["InventoryKmsKeyArns"], keys["SourceKmsKeyArns"], keys["ArchiveKmsKeyArn"]
    expected = {
        "GrouperTaskRole": {("kms:Decrypt", inventory), ("kms:Decrypt", archive), ("kms:GenerateDataKey", archive)},
        "BundlerTaskRole": {("kms:Decrypt", source), ("kms:Decrypt", archive), ("kms:GenerateDataKey", archive)},
        "VerifyKmsPolicy": {("kms:Decrypt", archive)},
        "PruneKmsPolicy": {("kms:GenerateDataKey", archive)},
    }
    via = {"StringEquals": {"kms:ViaService": f"s3.{args.region}.amazonaws.com"}}
    result = {}
    for name, wanted in expected.items():
        grants = {}
        if name.endswith("Role"):
            role = outputs[f"{name}Arn"].rsplit("/", 1)[-1]
            for policy_name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
                grants.update(kms_grants(policy_document(document)))
        else:
            arn = outputs.get(f"{name}Arn")
            if arn:
                policy = iam.get_policy(PolicyArn=arn)["Policy"]
                version = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
                grants.update(kms_grants(policy_document(version["PolicyVersion"]["Document"])))
        conditions_ok = all(condition == via for condition in grants.values())
        result[name] = {
            "Grants": sorted(f"{action} {key}" for action, key in grants),
            "Ok": set(grants) == wanted and conditions_ok,
        }
        if not conditions_ok:
            result[name]["Conditions"] = [c for c in grants.values() if c != via]
    result["Ok"] = all(r["Ok"] for r in result.values())
    return result


def container_command(ecs, task_definition):
    definition = ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
    # moto keeps the AWS::NoValue items of a list as nulls; CloudFormation drops them.
    return [c for c in definition["containerDefinitions"][0]["command"] if c is not None]


def run_bundler(args, outputs):
    """The whole pipeline with the stack's task definitions and a real binary, against moto:
    an inventory of 20 objects -> the grouper command as `s3bundler submit` runs it -> the S3
    event of the manifest -> the manifest queue -> the bundler service's command -> archive
    and index, message deleted."""
    s3 = client("s3", args)
    sqs = client("sqs", args)
    ecs = client("ecs", args)
    bucket = outputs["ArchiveBucketName"]
    source = args.parameters["SourceBuckets"].split(",")[0]
    inventory_bucket = args.parameters["InventoryBucket"]
    for name in (source, inventory_bucket):
        try:
            s3.create_bucket(Bucket=name)
        except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            pass
    objects = {f"cfn-stack/{i:02d} object+{i}.txt": b"x" * (100 + i) for i in range(20)}
    for key, body in objects.items():
        s3.put_object(Bucket=source, Key=key, Body=body)
    inventory = put_inventory(s3, source, inventory_bucket, objects)
    result = {}
    configured = s3.get_bucket_notification_configuration(Bucket=bucket)
    # An existing bucket has no notification: the grouper's --queue must deliver alone.
    if not configured.get("QueueConfigurations") and not args.parameters.get("ExistingArchiveBucket"):
        replay_notification(s3, outputs)
    received_keys(sqs, outputs["ManifestQueueUrl"])  # test events, earlier checks
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=args.region)
    base = [args.bundler, "--endpoint-url", args.endpoint]
    # `s3bundler submit` runs the grouper task with the command `group <options> -m URI`.
    group = ["group", *outputs["GroupOptions"].split(), "-m", inventory]
    if outputs.get("NewInventoryRuleName"):
        # The command the EventBridge rule gives the grouper for this inventory's manifest.json.
        rule = check_inventory_rule(args, outputs, inventory)
        result["InventoryRuleOk"] = rule["Ok"]
        group = rule["Command"] or group
    grouper_default = container_command(ecs, outputs["GrouperTaskDefinition"])
    done = subprocess.run(base + group, env=env, capture_output=True, text=True, timeout=120)
    result["GroupCommand"] = group
    result["GroupExitCode"] = done.returncode
    result["GrouperTaskCommandMatches"] = grouper_default == group[: len(grouper_default)]
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
    command = container_command(ecs, outputs["BundlerTaskDefinition"])
    done = subprocess.run(
        base + command + ["--wait-time=1", "--idle-timeout=3"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    result["BundleCommand"] = command
    result["BundleExitCode"] = done.returncode
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=outputs["ArchivePrefix"] + "/").get("Contents", [])
    result["Indexes"] = [o["Key"] for o in listing if "cfn-stack" in o["Key"] and o["Key"].endswith(".index")]
    archived = set()
    for key in result["Indexes"]:
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        archived.update(row["key"] for row in csv.DictReader(io.StringIO(text)))
    attributes = sqs.get_queue_attributes(
        QueueUrl=outputs["ManifestQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    result["MessagesLeft"] = int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
    result["ObjectsArchived"] = len(archived & set(objects))
    result["Ok"] = (
        result["GroupExitCode"] == 0
        and result["GrouperTaskCommandMatches"]
        and result["BundleExitCode"] == 0
        and archived == set(objects)
        and result["MessagesLeft"] == 0
        and result.get("InventoryRuleOk", True)
    )
    if done.returncode != 0 or not result["Ok"]:
        print(done.stderr[-4000:], file=sys.stderr)
    return {"BundlerRun": result}


def main(argv):
    args = parse_args(argv)
    parameters = dict(args.parameters)
    if args.compute:
        parameters["CapacityType"] = args.compute
        parameters["ComputeStackName"] = create_compute_stack(args)
    if parameters.get("ExistingArchiveBucket"):
        s3 = client("s3", args)
        try:
            s3.create_bucket(Bucket=parameters["ExistingArchiveBucket"])
        except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            pass
    keys = None
    if args.check_kms:
        keys = create_kms_keys(args)
        parameters.update(keys)
    outputs = create_stack(args, args.stack_name, args.template, parameters)
    if keys:
        outputs["Kms"] = check_kms(args, outputs, keys)
    if args.check_notification:
        outputs.update(check_notification(args, outputs))
    if args.check_inventory_rule:
        outputs["InventoryRule"] = check_inventory_rule(args, outputs)
    if args.bundler:
        outputs.update(run_bundler(args, outputs))
    json.dump(outputs, sys.stdout, indent=2, sort_keys=True)
    print()
    if args.bundler and not outputs["BundlerRun"]["Ok"]:
        fail(f"the grouper and bundler commands did not archive the inventory: {outputs['BundlerRun']}")
    if args.check_inventory_rule and not outputs["InventoryRule"]["Ok"]:
        fail(f"the new-inventory rule does not start the grouper as submit does: {outputs['InventoryRule']}")
    if args.check_kms and not outputs["Kms"]["Ok"]:
        fail(f"the stack's KMS grants are not the expected ones through S3: {outputs['Kms']}")
    if args.check_notification and not outputs["NotificationDelivered"]:
        fail(f"the manifest queue received {outputs['NotificationKeys']}, expected only the .index manifests")


if __name__ == "__main__":
    main(sys.argv[1:])
