#!/usr/bin/env python3
"""Structure check of the s3bundler CloudFormation templates, beyond what cfn-lint knows.

    deploy/check_templates.py [--self-test] [TEMPLATE...]   (default: deploy/cloudformation/*.yaml)

Asserts that
  * every IAM role is known here and its statements name only the actions listed below for it
    (and all of them, so that a removed permission is noticed too), with no wildcard action;
  * no statement has Resource "*" unless every action in it is one that cannot be scoped
    (UNSCOPABLE, each with its reason), and no resource is a whole-service wildcard;
  * the execution role only pulls the image from ECR and writes logs;
  * the archive bucket notifies the manifest queue for keys under the manifest prefix ending in
    .index, and nothing else; its lifecycle aborts incomplete multipart uploads bucket-wide and
    expires the grouper's staging area; it is encrypted and not public;
  * the manifest queue has a redrive policy to a dead-letter queue in the same template, and
    only S3 (from this bucket and account) may send to it;
  * the S3Bundler/Errors metric filter exists;
  * the compute stack drains spot instances, protects instances with tasks from scale-in and
    reads the ECS AMI from the public SSM parameter.
Every failure names the template, the resource and its line, and the script exits 1.
--self-test then breaks the templates in memory in the ways listed in MUTATIONS and checks that
each breakage is reported.
"""

import json
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

HERE = Path(__file__).resolve().parent
DEFAULT_TEMPLATES = sorted((HERE / "cloudformation").glob("*.yaml"))

# Actions that have no resource-level permissions, so Resource "*" is the only option.
UNSCOPABLE = {
    "ecr:GetAuthorizationToken": "an ECR login token is account-wide; the action has no resource type",
}

# template file name -> IAM role logical ID -> the exact set of actions its inline policies grant.
EXPECTED_ROLES = {
    "core.yaml": {
        "ExecutionRole": {
            "ecr:GetAuthorizationToken",
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        },
        "GrouperTaskRole": {
            "s3:GetObject",  # inventory reports; staged manifests (copy source); existing manifests
            "s3:PutObject",  # manifests, staged then copied in place
            "s3:DeleteObject",  # staged manifests only
            "s3:ListBucket",  # a missing manifest answers 404, not 403
            "sqs:GetQueueUrl",
            "sqs:SendMessage",  # group --queue
            "kms:Decrypt",  # with ArchiveKmsKeyArn only
            "kms:GenerateDataKey",
        },
        "BundlerTaskRole": {
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:GetObjectTagging",
            "s3:GetObjectVersionTagging",
            "s3:ListBucket",  # a deleted source object answers 404 (NoSuchKey), not 403
            "s3:PutObject",  # archives (multipart), indexes, big-object copies, .dlq, .lease
            "s3:DeleteObject",  # a stale .dlq, its own .lease: beside the manifests only
            "s3:PutObjectTagging",  # big-object copies keep their tags
            "s3:AbortMultipartUpload",
            "s3:ListBucketMultipartUploads",  # uploads a killed worker left, aborted by the next
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "ecs:UpdateTaskProtection",  # scale-in protection of its own task (ECS agent endpoint)
        },
    },
    "compute.yaml": {
        # No inline policy: the AWS managed policy for the ECS agent (see MANAGED_POLICIES).
        "InstanceRole": set(),
    },
}

# Roles allowed to carry AWS managed policies, with the only policies they may carry.
MANAGED_POLICIES = {
    ("compute.yaml", "InstanceRole"): {
        "service-role/AmazonEC2ContainerServiceforEC2Role":
            "the ECS agent on the instances registers, polls for tasks and pulls images",
    },
}

TRUSTED_SERVICE = {
    "ExecutionRole": "ecs-tasks.amazonaws.com",
    "GrouperTaskRole": "ecs-tasks.amazonaws.com",
    "BundlerTaskRole": "ecs-tasks.amazonaws.com",
    "InstanceRole": "ec2.amazonaws.com",
}

# Actions a statement of each role may only grant on resources whose text contains one of these.
RESOURCE_MUST_CONTAIN = {
    ("GrouperTaskRole", "s3:DeleteObject"): ("/_staging/",),
    # Archives and indexes; a DLQ past one part is a multipart upload too.
    ("BundlerTaskRole", "s3:AbortMultipartUpload"): ("${ArchivePrefix}/", "${ManifestPrefix}/*.dlq"),
    ("BundlerTaskRole", "s3:DeleteObject"): ("${ManifestPrefix}/*.",),
    ("BundlerTaskRole", "s3:PutObjectTagging"): ("${ArchivePrefix}/",),
    # Uploads an earlier attempt left: listed on the archive bucket only.
    ("BundlerTaskRole", "s3:ListBucketMultipartUploads"): ("ArchiveBucket",),
    # Tasks of the stack's own cluster only.
    ("BundlerTaskRole", "ecs:UpdateTaskProtection"): (":task/${Cluster}/*",),
}

EXECUTION_ROLE_SERVICES = {"ecr", "logs"}


class Checker:
    def __init__(self):
        self.failures = []

    def fail(self, template, resource, node, message):
        line = getattr(getattr(node, "start_mark", None), "line", None)
        where = f"{template.name}: {resource}" + (f" (line {line + 1})" if line is not None else "")
        self.failures.append(f"{where}: {message}")


def as_list(value):
    return value if isinstance(value, list) else [value]


def expand_if(value):
    """The possible values of an item that may be an Fn::If (both branches, minus NoValue)."""
    if isinstance(value, dict) and list(value) == ["Fn::If"]:
        _, yes, no = value["Fn::If"]
        return [v for branch in (yes, no) for v in expand_if(branch)]
    if isinstance(value, dict) and value.get("Ref") == "AWS::NoValue":
        return []
    return [value]


def statements(document):
    result = []
    for item in as_list(document.get("Statement", [])):
        result.extend(expand_if(item))
    return result


def text_of(value):
    """A readable flattening of an intrinsic-function value, for pattern checks."""
    return json.dumps(value, sort_keys=True)


def check_statement_resources(checker, template, role, statement):
    sid = statement.get("Sid", "(no Sid)")
    actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
    resources = []
    for item in as_list(statement.get("Resource", [])):
        resources.extend(expand_if(item))
    if "NotResource" in statement or "NotAction" in statement:
        checker.fail(template, role, statement, f"statement {sid} uses NotResource/NotAction")
    for resource in resources:
        if resource == "*":
            unscopable = [a for a in actions if a in UNSCOPABLE]
            if len(unscopable) != len(actions):
                others = sorted(set(actions) - set(unscopable))
                checker.fail(
                    template, role, statement,
                    f"statement {sid} has Resource \"*\" for {others}; scope it to an ARN "
                    f"(only {sorted(UNSCOPABLE)} may use \"*\")",
                )
            continue
        flat = text_of(resource)
        if re.search(r':::\*"|:\*"$|:\*:\*', flat):
            checker.fail(template, role, statement, f"statement {sid} has a wildcard resource {flat}")
    for action in actions:
        needles = RESOURCE_MUST_CONTAIN.get((role, action))
        if needles and not all(any(n in text_of(r) for n in needles) for r in resources):
            checker.fail(
                template, role, statement,
                f"statement {sid}: {action} must only apply to resources containing one of {needles!r}",
            )


def check_roles(checker, template, resources):
    expected_roles = EXPECTED_ROLES.get(template.name, {})
    for name, resource in resources.items():
        kind = resource.get("Type")
        props = resource.get("Properties", {})
        if kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"):
            checker.fail(template, name, resource, f"{kind} is not expected; put permissions in a known role")
            continue
        if kind != "AWS::IAM::Role":
            continue
        if name not in expected_roles:
            checker.fail(
                template, name, resource,
                "IAM role not known to deploy/check_templates.py; list its expected actions there",
            )
            continue
        trusted = TRUSTED_SERVICE.get(name)
        trust = text_of(props.get("AssumeRolePolicyDocument", {}))
        if trusted and f'"{trusted}"' not in trust:
            checker.fail(template, name, resource, f"the role must be assumable by {trusted} only")
        for statement in statements(props.get("AssumeRolePolicyDocument", {})):
            principal = statement.get("Principal", {})
            if not isinstance(principal, dict) or set(principal) != {"Service"}:
                checker.fail(template, name, statement, "trust policy must name a service principal only")
        allowed_managed = MANAGED_POLICIES.get((template.name, name), {})
        for arn in as_list(props.get("ManagedPolicyArns", [])):
            flat = text_of(arn)
            if not any(f':policy/{p}"' in flat for p in allowed_managed):
                checker.fail(
                    template, name, resource,
                    f"managed policy {flat} is not allowed (allowed: {sorted(allowed_managed) or 'none'})",
                )
        granted = set()
        for policy in as_list(props.get("Policies", [])):
            for statement in statements(policy.get("PolicyDocument", {})):
                sid = statement.get("Sid", "(no Sid)")
                if statement.get("Effect") != "Allow":
                    continue
                actions = as_list(statement.get("Action", []))
                for action in actions:
                    if not isinstance(action, str) or "*" in action:
                        checker.fail(template, name, statement, f"statement {sid}: wildcard or computed action {action!r}")
                        continue
                    if action not in expected_roles[name]:
                        checker.fail(
                            template, name, statement,
                            f"statement {sid}: action {action} is not expected for this role "
                            f"(expected only {sorted(expected_roles[name])})",
                        )
                    granted.add(action)
                check_statement_resources(checker, template, name, statement)
        missing = expected_roles[name] - granted
        if missing:
            checker.fail(template, name, resource, f"expected actions not granted: {sorted(missing)}")
        if name == "ExecutionRole":
            services = {a.split(":")[0] for a in granted}
            if not services <= EXECUTION_ROLE_SERVICES or props.get("ManagedPolicyArns"):
                checker.fail(template, name, resource, "the execution role may only pull from ECR and write logs")
    for name in expected_roles:
        if name not in resources:
            checker.fail(template, name, None, "expected IAM role is missing from the template")


def check_resource_policies(checker, template, resources):
    for name, resource in resources.items():
        kind = resource.get("Type")
        props = resource.get("Properties", {})
        if kind == "AWS::SQS::QueuePolicy":
            for statement in statements(props.get("PolicyDocument", {})):
                actions = as_list(statement.get("Action", []))
                principal = text_of(statement.get("Principal"))
                condition = text_of(statement.get("Condition", {}))
                if statement.get("Effect") == "Allow" and (
                    actions != ["sqs:SendMessage"]
                    or '"s3.amazonaws.com"' not in principal
                    or "aws:SourceArn" not in condition
                    or "aws:SourceAccount" not in condition
                ):
                    checker.fail(
                        template, name, statement,
                        "the queue policy may only let s3.amazonaws.com SendMessage, "
                        "conditioned on aws:SourceArn (the archive bucket) and aws:SourceAccount",
                    )
        elif kind == "AWS::S3::BucketPolicy":
            for statement in statements(props.get("PolicyDocument", {})):
                if statement.get("Effect") != "Deny":
                    checker.fail(template, name, statement, "the bucket policy may only deny (access is granted by the roles)")
        elif kind == "AWS::Logs::ResourcePolicy":
            document = text_of(props.get("PolicyDocument"))
            actions = set(re.findall(r"logs:[A-Za-z*]+", document))
            if actions != {"logs:CreateLogStream", "logs:PutLogEvents"}:
                checker.fail(template, name, resource, f"the logs resource policy grants {sorted(actions)}")


def find_one(checker, template, resources, kind, what):
    found = {n: r for n, r in resources.items() if r.get("Type") == kind}
    if len(found) != 1:
        checker.fail(template, kind, None, f"expected exactly one {what}, found {sorted(found) or 'none'}")
        return None, None
    return next(iter(found.items()))


def check_core(checker, template, resources):
    bucket_name, bucket = find_one(checker, template, resources, "AWS::S3::Bucket", "archive bucket")
    queues = {n for n, r in resources.items() if r.get("Type") == "AWS::SQS::Queue"}
    manifest_queue = None
    for name in sorted(queues):
        redrive = resources[name].get("Properties", {}).get("RedrivePolicy")
        if redrive:
            manifest_queue = name
            target = redrive.get("deadLetterTargetArn", {})
            dlq = target.get("Fn::GetAtt", [None])[0] if isinstance(target, dict) else None
            if dlq not in queues or dlq == name:
                checker.fail(template, name, redrive, "redrive policy must target another queue of this template")
            if "maxReceiveCount" not in redrive:
                checker.fail(template, name, redrive, "redrive policy has no maxReceiveCount")
    if manifest_queue is None:
        checker.fail(template, "AWS::SQS::Queue", None, "no queue has a redrive policy to a dead-letter queue")
    if bucket is not None:
        props = bucket.get("Properties", {})
        configs = props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        other = {k for k in props.get("NotificationConfiguration", {}) if k != "QueueConfigurations"}
        if other:
            checker.fail(template, bucket_name, props, f"unexpected notifications {sorted(other)}")
        if len(configs) != 1:
            checker.fail(template, bucket_name, props, "expected exactly one queue notification (manifests)")
        for config in configs:
            rules = {
                r.get("Name"): r.get("Value")
                for r in config.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            }
            if config.get("Event") != "s3:ObjectCreated:*":
                checker.fail(template, bucket_name, config, "the notification must be for s3:ObjectCreated:*")
            if config.get("Queue") != {"Fn::GetAtt": [manifest_queue, "Arn"]}:
                checker.fail(template, bucket_name, config, f"the notification must go to {manifest_queue}")
            if rules.get("prefix") != {"Fn::Sub": "${ManifestPrefix}/"}:
                checker.fail(template, bucket_name, config, f"notification prefix must be ${{ManifestPrefix}}/, is {rules.get('prefix')}")
            if rules.get("suffix") != ".index":
                checker.fail(template, bucket_name, config, f"notification suffix must be .index, is {rules.get('suffix')}")
        lifecycle = []
        for rule in props.get("LifecycleConfiguration", {}).get("Rules", []):
            lifecycle.extend(expand_if(rule))
        aborts = [
            r for r in lifecycle
            if r.get("Status") == "Enabled" and r.get("AbortIncompleteMultipartUpload")
            and not r.get("Prefix") and not r.get("TagFilters")
        ]
        if not aborts:
            checker.fail(template, bucket_name, props, "no enabled bucket-wide lifecycle rule aborts incomplete multipart uploads")
        staging = [
            r for r in lifecycle
            if r.get("Status") == "Enabled" and "_staging/" in text_of(r.get("Prefix"))
            and "ExpirationInDays" in r
        ]
        if not staging:
            checker.fail(template, bucket_name, props, "no lifecycle rule expires the grouper's _staging/ leftovers")
        if not props.get("BucketEncryption"):
            checker.fail(template, bucket_name, props, "default encryption is not set")
        block = props.get("PublicAccessBlockConfiguration", {})
        for key in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
            if block.get(key) is not True:
                checker.fail(template, bucket_name, props, f"PublicAccessBlockConfiguration.{key} must be true")
    filters = [
        (n, t) for n, r in resources.items() if r.get("Type") == "AWS::Logs::MetricFilter"
        for t in r.get("Properties", {}).get("MetricTransformations", [])
    ]
    if not any(t.get("MetricNamespace") == "S3Bundler" and t.get("MetricName") == "Errors" for _, t in filters):
        checker.fail(template, "AWS::Logs::MetricFilter", None, "the S3Bundler/Errors metric filter is missing")
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        for container in resource.get("Properties", {}).get("ContainerDefinitions", []):
            if not container.get("StopTimeout"):
                checker.fail(template, name, container, "containers need a StopTimeout so SIGTERM gives time to release the message")


def check_compute(checker, template, resources):
    lt_name, lt = find_one(checker, template, resources, "AWS::EC2::LaunchTemplate", "launch template")
    if lt is not None:
        user_data = text_of(lt.get("Properties", {}).get("LaunchTemplateData", {}).get("UserData"))
        if "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true" not in user_data:
            checker.fail(template, lt_name, lt, "user data must set ECS_ENABLE_SPOT_INSTANCE_DRAINING=true")
    asg_name, asg = find_one(checker, template, resources, "AWS::AutoScaling::AutoScalingGroup", "Auto Scaling group")
    if asg is not None:
        props = asg.get("Properties", {})
        if props.get("NewInstancesProtectedFromScaleIn") is not True:
            checker.fail(template, asg_name, asg, "NewInstancesProtectedFromScaleIn must be true (managed termination protection)")
        if "MixedInstancesPolicy" not in props:
            checker.fail(template, asg_name, asg, "spot capacity needs a MixedInstancesPolicy")
    cp_name, cp = find_one(checker, template, resources, "AWS::ECS::CapacityProvider", "capacity provider")
    if cp is not None:
        provider = cp.get("Properties", {}).get("AutoScalingGroupProvider", {})
        if provider.get("ManagedTerminationProtection") != "ENABLED":
            checker.fail(template, cp_name, cp, "ManagedTerminationProtection must be ENABLED")
        if provider.get("ManagedScaling", {}).get("Status") != "ENABLED":
            checker.fail(template, cp_name, cp, "ManagedScaling must be ENABLED")


def check_ami_parameter(checker, template, parameters):
    ami = [
        (n, p) for n, p in parameters.items()
        if "AWS::EC2::Image::Id" in str(p.get("Type", ""))
    ]
    for name, parameter in ami:
        if parameter.get("Default") != "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id":
            checker.fail(template, name, parameter, "the AMI must default to the public ECS-optimized SSM parameter")


def check_template(checker, template, data):
    resources = data.get("Resources", {})
    check_roles(checker, template, resources)
    check_resource_policies(checker, template, resources)
    if template.name == "core.yaml":
        check_core(checker, template, resources)
    elif template.name == "compute.yaml":
        check_compute(checker, template, resources)
        check_ami_parameter(checker, template, data.get("Parameters", {}))
    else:
        checker.fail(template, "template", None, "unknown template: add its checks to deploy/check_templates.py")


def role_statements(data, role):
    return data["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def statement(data, role, sid):
    return next(s for s in role_statements(data, role) if isinstance(s, dict) and s.get("Sid") == sid)


def any_statement(data, role, sid):
    """A statement of any of the role's inline policies."""
    policies = data["Resources"][role]["Properties"]["Policies"]
    return next(
        s for p in policies for s in p["PolicyDocument"]["Statement"] if isinstance(s, dict) and s.get("Sid") == sid
    )


def bucket_props(data):
    return data["Resources"]["ArchiveBucket"]["Properties"]


# Mutations of the real templates that the checks must catch: (template, description, change,
# text the failure must contain).
MUTATIONS = [
    ("core.yaml", "extra action", lambda d: statement(d, "BundlerTaskRole", "WriteArchives")["Action"].append("s3:DeleteObjectVersion"), "BundlerTaskRole"),
    ("core.yaml", "dlq abort widened", lambda d: statement(d, "BundlerTaskRole", "AbortDlqUploads").update(Resource={"Fn::Sub": "${ArchiveBucket.Arn}/*"}), "s3:AbortMultipartUpload must only apply"),
    ("core.yaml", "bundler delete widened", lambda d: statement(d, "BundlerTaskRole", "WriteArchives")["Action"].append("s3:DeleteObject"), "${ManifestPrefix}/*."),
    ("core.yaml", "wildcard action", lambda d: statement(d, "BundlerTaskRole", "ReadManifests").update(Action="s3:*"), "wildcard"),
    ("core.yaml", "Resource *", lambda d: statement(d, "GrouperTaskRole", "SendManifestMessages").update(Resource="*"), 'Resource "*"'),
    ("core.yaml", "missing action", lambda d: statement(d, "BundlerTaskRole", "ConsumeManifestQueue")["Action"].remove("sqs:ChangeMessageVisibility"), "not granted"),
    ("core.yaml", "execution role reads S3", lambda d: statement(d, "ExecutionRole", "WriteTaskLogs")["Action"].append("s3:GetObject"), "ExecutionRole"),
    ("core.yaml", "execution role managed policy", lambda d: d["Resources"]["ExecutionRole"]["Properties"].update(ManagedPolicyArns=["arn:aws:iam::aws:policy/AdministratorAccess"]), "managed policy"),
    ("core.yaml", "staging delete widened", lambda d: statement(d, "GrouperTaskRole", "RemoveStagedManifests").update(Resource={"Fn::Sub": "${ArchiveBucket.Arn}/*"}), "_staging"),
    ("core.yaml", "unknown role", lambda d: d["Resources"].update(ExtraRole=dict(d["Resources"]["BundlerTaskRole"])), "ExtraRole"),
    ("core.yaml", "suffix", lambda d: bucket_props(d)["NotificationConfiguration"]["QueueConfigurations"][0]["Filter"]["S3Key"]["Rules"][1].update(Value=".csv"), "suffix"),
    ("core.yaml", "prefix", lambda d: bucket_props(d)["NotificationConfiguration"]["QueueConfigurations"][0]["Filter"]["S3Key"]["Rules"].pop(0), "prefix"),
    ("core.yaml", "no redrive", lambda d: d["Resources"]["ManifestQueue"]["Properties"].pop("RedrivePolicy"), "redrive"),
    ("core.yaml", "no abort rule", lambda d: bucket_props(d)["LifecycleConfiguration"]["Rules"].pop(0), "incomplete multipart"),
    ("core.yaml", "no staging expiry", lambda d: bucket_props(d)["LifecycleConfiguration"]["Rules"].pop(1), "_staging"),
    ("core.yaml", "public bucket", lambda d: bucket_props(d)["PublicAccessBlockConfiguration"].update(BlockPublicPolicy=False), "BlockPublicPolicy"),
    ("core.yaml", "queue policy open", lambda d: d["Resources"]["ManifestQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0].pop("Condition"), "ManifestQueuePolicy"),
    ("core.yaml", "no errors filter", lambda d: d["Resources"].pop("ErrorsMetricFilter"), "S3Bundler/Errors"),
    ("core.yaml", "task protection of any task", lambda d: any_statement(d, "BundlerTaskRole", "ProtectOwnTaskFromScaleIn").update(Resource={"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/*"}), "ecs:UpdateTaskProtection must only apply"),
    ("core.yaml", "no stop timeout", lambda d: d["Resources"]["BundlerTaskDefinition"]["Properties"]["ContainerDefinitions"][0].pop("StopTimeout"), "StopTimeout"),
    ("compute.yaml", "no spot draining", lambda d: d["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"].update(UserData="#!/bin/bash"), "SPOT_INSTANCE_DRAINING"),
    ("compute.yaml", "no termination protection", lambda d: d["Resources"]["CapacityProvider"]["Properties"]["AutoScalingGroupProvider"].update(ManagedTerminationProtection="DISABLED"), "ManagedTerminationProtection"),
    ("compute.yaml", "unprotected instances", lambda d: d["Resources"]["AutoScalingGroup"]["Properties"].update(NewInstancesProtectedFromScaleIn=False), "NewInstancesProtectedFromScaleIn"),
    ("compute.yaml", "fixed AMI", lambda d: d["Parameters"]["EcsAmiId"].update(Default="ami-12345678"), "SSM"),
    ("compute.yaml", "instance role extra policy", lambda d: d["Resources"]["InstanceRole"]["Properties"]["ManagedPolicyArns"].append("arn:aws:iam::aws:policy/AmazonS3FullAccess"), "AmazonS3FullAccess"),
]


def self_test(templates):
    """Each mutation must make the checks fail with a message naming what was broken."""
    by_name = {t.name: t for t in templates}
    problems = []
    for name, description, mutate, expected in MUTATIONS:
        template = by_name[name]
        data, _ = decode(str(template))
        mutate(data)
        checker = Checker()
        check_template(checker, template, data)
        if not any(expected in failure for failure in checker.failures):
            problems.append(f"mutation '{description}' of {name} was not reported (expected a failure mentioning {expected!r}; got {checker.failures})")
    for problem in problems:
        print(f"ERROR: self-test: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_templates: self-test OK ({len(MUTATIONS)} mutations caught)")
    return 1 if problems else 0


def main(argv):
    run_self_test = "--self-test" in argv
    argv = [a for a in argv if a != "--self-test"]
    templates = [Path(a) for a in argv] or DEFAULT_TEMPLATES
    checker = Checker()
    for template in templates:
        data, matches = decode(str(template))
        if matches or data is None:
            for match in matches:
                checker.fail(template, "template", None, str(match))
            continue
        check_template(checker, template, data)
    if checker.failures:
        for failure in checker.failures:
            print(f"ERROR: {failure}", file=sys.stderr)
        print(f"check_templates: {len(checker.failures)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_templates: {len(templates)} template(s) OK: {', '.join(t.name for t in templates)}")
    return self_test(templates) if run_self_test else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
