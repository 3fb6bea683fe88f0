#!/usr/bin/env python3
"""Structure check of the s3bundler CloudFormation templates, beyond what cfn-lint knows.

    deploy/check_templates.py [--self-test] [TEMPLATE...]   (default: deploy/cloudformation/*.yaml)

Asserts that
  * every IAM role is known here and its statements name only the actions listed below for it
    (and all of them, so that a removed permission is noticed too), with no wildcard action;
    likewise the operators' managed policies (VerifyPolicy, PrunePolicy), which are attached to
    no role, user or group of the stack; no other IAM policy, user or group exists;
  * no statement has Resource "*" unless every action in it is one that cannot be scoped
    (UNSCOPABLE, each with its reason), and no resource is a whole-service wildcard;
  * the execution role only pulls the image from ECR and writes logs;
  * every statement that grants kms:* actions (roles and managed policies) grants nothing else
    and has exactly the condition StringEquals kms:ViaService "s3.${AWS::Region}.amazonaws.com"
    (the keys are used only through S3, in the stack's region, never with a literal region);
    the grouper gets kms:Decrypt on InventoryKmsKeyArns under the InventoryKms condition (SSE-KMS
    inventories); no managed policy has an Fn::If statement (moto's CloudFormation keeps a
    NoValue one as a null statement), so the operators' KMS policies are whole resources created
    under a Condition, each with an output of the same condition;
  * the archive bucket notifies the manifest queue for keys under the manifest prefix ending in
    .index, and nothing else; its lifecycle aborts incomplete multipart uploads bucket-wide and
    expires the grouper's staging area; it is encrypted and not public;
  * the manifest queue has a redrive policy to a dead-letter queue in the same template, and
    only S3 (from this bucket and account) may send to it;
  * the S3Bundler/Errors metric filter exists;
  * the dead-letter queue keeps messages longer than the manifest queue and lets only the
    manifest queue redrive to it (RedriveAllowPolicy byQueue);
  * the archive bucket is versioned by default and expires noncurrent versions;
  * no ARN is written for one partition (no "arn:aws:" literal);
  * the bundler service has no DesiredCount (a stack update would reset the fleet), scales by
    target tracking on the backlog per *desired* task (Application Auto Scaling multiplies the
    metric's ratio by the desired count; the running count would compound a slow start), and a
    step policy starts the first task;
  * alarms exist on the EMF metric ObjectsFailed (namespace from src/metrics.rs) for the
    reasons AccessDenied and Retry, and on manifests waiting with no bundler running (metric
    math over the queue and Container Insights, which cannot be disabled), firing within 15
    minutes;
  * an EventBridge rule on new inventory manifest.json files runs the grouper task definition
    with the grouper's command (group ... -m s3://<bucket>/<key>) in the overrides;
  * that trigger cannot fail silently: a template rule requires InventoryPrefix while
    GroupNewInventories is on; the rule's target has a RetryPolicy and a DeadLetterConfig to a
    queue of the stack that only the rule may send to and that has an alarm to the AlarmTopic;
    a rule sends grouper tasks that stop with a non-zero exit code to the AlarmTopic (a topic
    policy lets only it publish); a rule on a grouper exiting 0 starts a bundler task with the
    bundler task definition's command plus --idle-timeout and --task-protection;
  * the archive bucket's DeletionPolicy is RetainExceptOnCreate;
  * the spot events rule counts tasks stopped by Fargate Spot and by EC2 spot;
  * the compute stack drains spot instances, protects instances with tasks from scale-in,
    reads the ECS AMI from the public SSM parameter, and collects the Auto Scaling group's
    capacity metrics (exported name) for the core stack's dashboard, which shows them.
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
            "s3:DeleteObject",  # staged manifests and old catalog generations only
            "s3:AbortMultipartUpload",  # a catalog generation's upload that failed
            "s3:ListBucket",  # a missing manifest answers 404, not 403
            "sqs:GetQueueUrl",
            "sqs:SendMessage",  # group --queue
            "kms:Decrypt",  # InventoryKmsKeyArns (inventories), ArchiveKmsKeyArn (manifests)
            "kms:GenerateDataKey",  # ArchiveKmsKeyArn only (manifests written)
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
            "sqs:SendMessage",  # delayed copies: a put-off duplicate, a 12-hour hand-over
            "kms:Decrypt",  # SourceKmsKeyArns; ArchiveKmsKeyArn (multipart uploads need it too)
            "kms:GenerateDataKey",  # ArchiveKmsKeyArn only
            "ecs:UpdateTaskProtection",  # scale-in protection of its own task (ECS agent endpoint)
        },
    },
    "compute.yaml": {
        # No inline policy: the AWS managed policy for the ECS agent (see MANAGED_POLICIES).
        "InstanceRole": set(),
    },
}
EXPECTED_ROLES["core.yaml"]["GrouperEventsRole"] = {
    "ecs:RunTask",  # the grouper task definition, in this cluster
    "iam:PassRole",  # the grouper task role and the execution role, to ECS tasks
}
EXPECTED_ROLES["core.yaml"]["BundlerStartRole"] = {
    "ecs:RunTask",  # the bundler task definition, in this cluster
    "iam:PassRole",  # the bundler task role and the execution role, to ECS tasks
}

# template file name -> operator managed policy -> the exact set of actions it grants. Attached
# to nothing in the stack (tests/tools/iam_enforced.py runs verify and prune with them).
EXPECTED_OPERATOR_POLICIES = {
    "core.yaml": {
        "VerifyPolicy": {
            "s3:ListBucket",  # the manifests under the prefix; a gone source object answers 404
            "s3:GetObject",  # manifests, DLQs, .pruned logs, indexes, archives; HEAD of sources
            "s3:GetObjectVersion",  # --deep and prune HEAD the archived version of a source
        },
        "PrunePolicy": {
            "s3:DeleteObject",  # source objects proven archived (DeleteObjects, with their ETag)
            "s3:DeleteObjectVersion",  # the archived version, when the index recorded one
            "s3:PutObject",  # the .pruned deletion logs beside the manifests
        },
        "RedrivePolicy": {
            "s3:PutObject",  # the redrive manifests ROOT.redriveN.index, and the catalog's records
            "s3:DeleteObject",  # catalog generations a compaction leaves behind
            "s3:AbortMultipartUpload",  # a catalog generation's upload that failed
            "sqs:SendMessage",  # redrive -q: one message per redrive manifest
        },
        "RestorePolicy": {
            "s3:RestoreObject",  # restore --yes: archives and big-object copies in a cold class
        },
        # Only with ArchiveKmsKeyArn (Condition ArchiveKms on the resource): SSE-KMS archives.
        "VerifyKmsPolicy": {
            "kms:Decrypt",  # reading manifests, indexes, archives
        },
        "PruneKmsPolicy": {
            "kms:GenerateDataKey",  # the .pruned log and redrive manifests, one PutObject each
        },
    },
}
# Operator policies that exist only under a template Condition (and so does their output).
CONDITIONAL_OPERATOR_POLICIES = {("core.yaml", "VerifyKmsPolicy"): "ArchiveKms", ("core.yaml", "PruneKmsPolicy"): "ArchiveKms"}

# The only condition a statement granting kms:* actions may have (and must have): the keys are
# used by S3 on the caller's behalf (SSE-KMS), in the stack's region.
KMS_VIA_S3 = {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}}

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
    "GrouperEventsRole": "events.amazonaws.com",
    "BundlerStartRole": "events.amazonaws.com",
}

# Actions a statement of each role may only grant on resources whose text contains one of these.
RESOURCE_MUST_CONTAIN = {
    ("GrouperTaskRole", "s3:DeleteObject"): ("/_staging/", "/_catalog/*/generations/"),
    # Archives and indexes; a DLQ past one part is a multipart upload too.
    ("BundlerTaskRole", "s3:AbortMultipartUpload"): ("${ArchivePrefix}/", "${ManifestPrefix}/*.dlq"),
    ("BundlerTaskRole", "s3:DeleteObject"): ("${ManifestPrefix}/*.",),
    ("BundlerTaskRole", "s3:PutObjectTagging"): ("${ArchivePrefix}/",),
    # Uploads an earlier attempt left: listed on the archive bucket only.
    ("BundlerTaskRole", "s3:ListBucketMultipartUploads"): ("ArchiveBucket",),
    ("GrouperEventsRole", "ecs:RunTask"): ("task-definition/${AWS::StackName}-grouper:",),
    ("GrouperEventsRole", "iam:PassRole"): ('"GrouperTaskRole"', '"ExecutionRole"'),
    ("BundlerStartRole", "ecs:RunTask"): ("task-definition/${AWS::StackName}-bundler:",),
    ("BundlerStartRole", "iam:PassRole"): ('"BundlerTaskRole"', '"ExecutionRole"'),
    # Operators: deletions on the source buckets' objects only, writes to the .pruned logs only.
    ("PrunePolicy", "s3:DeleteObject"): ('"arn:*:s3:::${Names}/*"',),
    ("PrunePolicy", "s3:DeleteObjectVersion"): ('"arn:*:s3:::${Names}/*"',),
    ("PrunePolicy", "s3:PutObject"): ("${ManifestPrefix}/*.pruned",),
    ("RedrivePolicy", "s3:PutObject"): ("${ManifestPrefix}/*.redrive*.index", "${ManifestPrefix}/_catalog/"),
    ("RedrivePolicy", "s3:DeleteObject"): ("${ManifestPrefix}/_catalog/*/generations/",),
    ("RedrivePolicy", "s3:AbortMultipartUpload"): ("${ManifestPrefix}/_catalog/*/generations/",),
    ("GrouperTaskRole", "s3:AbortMultipartUpload"): ("/_catalog/*/generations/",),
    ("RedrivePolicy", "sqs:SendMessage"): ('"ManifestQueue"',),
    ("RestorePolicy", "s3:RestoreObject"): ("${ArchivePrefix}/",),
    # KMS keys: each role only the keys of what it reads or writes.
    ("GrouperTaskRole", "kms:Decrypt"): ('"InventoryKmsKeyArns"', '"ArchiveKmsKeyArn"'),
    ("GrouperTaskRole", "kms:GenerateDataKey"): ('"ArchiveKmsKeyArn"',),
    ("BundlerTaskRole", "kms:Decrypt"): ('"SourceKmsKeyArns"', '"ArchiveKmsKeyArn"'),
    ("BundlerTaskRole", "kms:GenerateDataKey"): ('"ArchiveKmsKeyArn"',),
    ("VerifyKmsPolicy", "kms:Decrypt"): ('"ArchiveKmsKeyArn"',),
    ("PruneKmsPolicy", "kms:GenerateDataKey"): ('"ArchiveKmsKeyArn"',),
    # Tasks of the stack's own cluster only.
    ("BundlerTaskRole", "ecs:UpdateTaskProtection"): (":task/${Cluster}/*",),
}

# The EMF namespace and the failure reasons that must raise an alarm (src/metrics.rs,
# DlqReason::as_str in src/archive/records.rs).
METRICS_RS = HERE.parent / "src" / "metrics.rs"
ALARMED_REASONS = ("AccessDenied", "Retry")
# The no-bundler alarm must fire within this many seconds of the condition.
STALL_ALARM_MAX_SECONDS = 900
ASG_CAPACITY_METRICS = {"GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances"}

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


def check_granted_actions(checker, template, name, node, documents, expected):
    """Every Allow statement's actions are expected ones (no wildcards), all expected ones are
    granted, and each statement's resources pass check_statement_resources."""
    granted = set()
    for document in documents:
        for statement in statements(document):
            sid = statement.get("Sid", "(no Sid)")
            if statement.get("Effect") != "Allow":
                continue
            for action in as_list(statement.get("Action", [])):
                if not isinstance(action, str) or "*" in action:
                    checker.fail(template, name, statement, f"statement {sid}: wildcard or computed action {action!r}")
                    continue
                if action not in expected:
                    checker.fail(
                        template, name, statement,
                        f"statement {sid}: action {action} is not expected for {name} "
                        f"(expected only {sorted(expected)})",
                    )
                granted.add(action)
            check_statement_resources(checker, template, name, statement)
    missing = expected - granted
    if missing:
        checker.fail(template, name, node, f"expected actions not granted: {sorted(missing)}")
    return granted


def check_operator_policies(checker, template, resources):
    expected = EXPECTED_OPERATOR_POLICIES.get(template.name, {})
    for name, actions in expected.items():
        resource = resources.get(name)
        if resource is None or resource.get("Type") != "AWS::IAM::ManagedPolicy":
            checker.fail(template, name, resource, "expected operator managed policy is missing from the template")
            continue
        props = resource.get("Properties", {})
        for attachment in ("Roles", "Users", "Groups"):
            if props.get(attachment):
                checker.fail(template, name, resource, f"operator policy attached to {attachment}: attach it to people, not to the stack's roles")
        check_granted_actions(checker, template, name, resource, [props.get("PolicyDocument", {})], actions)


def policy_documents(resources):
    """(resource name, resource, policy document) of every IAM role's inline policies and every
    managed policy."""
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::IAM::Role":
            for policy in as_list(props.get("Policies", [])):
                yield name, resource, policy.get("PolicyDocument", {})
        elif resource.get("Type") in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            yield name, resource, props.get("PolicyDocument", {})


def check_kms(checker, template, data):
    """KMS keys only through S3 in the stack's region; the grouper reads SSE-KMS inventories;
    the operators' KMS grants are whole policies under a Condition, with their outputs."""
    resources = data.get("Resources", {})
    for name, resource, document in policy_documents(resources):
        for statement in statements(document):
            actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
            kms = [a for a in actions if a.startswith("kms:")]
            if not kms:
                continue
            sid = statement.get("Sid", "(no Sid)")
            if len(kms) != len(actions):
                checker.fail(template, name, statement, f"statement {sid} mixes kms:* with other actions; give the KMS grant its own statement")
            if statement.get("Condition") != KMS_VIA_S3:
                checker.fail(
                    template, name, statement,
                    f"statement {sid} grants {kms} without exactly the condition {text_of(KMS_VIA_S3)} "
                    f"(kms:ViaService: the key only through S3 in the stack's region; got {text_of(statement.get('Condition'))})",
                )
        if resource.get("Type") == "AWS::IAM::ManagedPolicy":
            for item in as_list(document.get("Statement", [])):
                if isinstance(item, dict) and "Fn::If" in item:
                    checker.fail(
                        template, name, item,
                        "a managed policy has an Fn::If statement (moto's CloudFormation keeps a NoValue "
                        "one as a null statement): make it a separate policy with a resource Condition",
                    )
    if template.name == "core.yaml":
        if "InventoryKmsKeyArns" not in data.get("Parameters", {}):
            checker.fail(template, "InventoryKmsKeyArns", None, "the parameter for the inventory reports' KMS keys is missing")
        grouper = resources.get("GrouperTaskRole", {}).get("Properties", {})
        found = False
        for policy in as_list(grouper.get("Policies", [])):
            for item in as_list(policy.get("PolicyDocument", {}).get("Statement", [])):
                branches = item.get("Fn::If") if isinstance(item, dict) else None
                if not (isinstance(branches, list) and len(branches) == 3 and branches[0] == "InventoryKms"):
                    continue
                yes = branches[1] if isinstance(branches[1], dict) else {}
                if "kms:Decrypt" in as_list(yes.get("Action", [])) and yes.get("Resource") == {"Ref": "InventoryKmsKeyArns"}:
                    found = True
        condition = text_of(data.get("Conditions", {}).get("InventoryKms"))
        if not found or '"InventoryKmsKeyArns"' not in condition:
            checker.fail(
                template, "GrouperTaskRole", resources.get("GrouperTaskRole"),
                "the grouper must get kms:Decrypt on InventoryKmsKeyArns under the InventoryKms condition "
                "(the condition true when the parameter is not empty): SSE-KMS inventory reports",
            )
    outputs = data.get("Outputs", {})
    for (file_name, name), condition in CONDITIONAL_OPERATOR_POLICIES.items():
        if file_name != template.name or name not in resources:
            continue
        resource = resources[name]
        if resource.get("Condition") != condition:
            checker.fail(template, name, resource, f"the policy must be created only under Condition {condition}")
        exported = [o for o in outputs.values() if o.get("Value") == {"Ref": name}]
        if not exported or any(o.get("Condition") != condition for o in exported):
            checker.fail(template, name, resource, f"the policy needs an output (its ARN) under Condition {condition}")


def check_roles(checker, template, resources):
    expected_roles = EXPECTED_ROLES.get(template.name, {})
    operator_policies = EXPECTED_OPERATOR_POLICIES.get(template.name, {})
    check_operator_policies(checker, template, resources)
    for name, resource in resources.items():
        kind = resource.get("Type")
        props = resource.get("Properties", {})
        if kind == "AWS::IAM::ManagedPolicy" and name in operator_policies:
            continue
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
        documents = [policy.get("PolicyDocument", {}) for policy in as_list(props.get("Policies", []))]
        granted = check_granted_actions(checker, template, name, resource, documents, expected_roles[name])
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
                from_s3 = '"s3.amazonaws.com"' in principal and "aws:SourceAccount" in condition
                # EventBridge dead-letters a rule's undelivered events (condition: that rule).
                from_rule = principal == '{"Service": "events.amazonaws.com"}' and '"Arn"' in condition
                if statement.get("Effect") == "Allow" and (
                    actions != ["sqs:SendMessage"] or "aws:SourceArn" not in condition or not (from_s3 or from_rule)
                ):
                    checker.fail(
                        template, name, statement,
                        "the queue policy may only let s3.amazonaws.com SendMessage, conditioned on "
                        "aws:SourceArn (the archive bucket) and aws:SourceAccount, or events.amazonaws.com "
                        "conditioned on aws:SourceArn (a rule of the stack)",
                    )
        elif kind == "AWS::SNS::TopicPolicy":
            for statement in statements(props.get("PolicyDocument", {})):
                if statement.get("Effect") == "Allow" and (
                    as_list(statement.get("Action", [])) != ["sns:Publish"]
                    or text_of(statement.get("Principal")) != '{"Service": "events.amazonaws.com"}'
                    or "aws:SourceArn" not in text_of(statement.get("Condition", {}))
                ):
                    checker.fail(
                        template, name, statement,
                        "the topic policy may only let events.amazonaws.com Publish, conditioned on aws:SourceArn (a rule of the stack)",
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


def emf_namespace():
    """The namespace the binary writes its EMF metrics in, or None without the sources."""
    try:
        match = re.search(r'pub const NAMESPACE: &str = "([^"]+)";', METRICS_RS.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def of_type(resources, kind):
    return {n: r for n, r in resources.items() if r.get("Type") == kind}


def check_partition_literals(checker, template, data):
    """ARNs are built with AWS::Partition (or the IAM wildcard), never for the aws partition."""
    for section in ("Resources", "Outputs", "Conditions", "Rules"):
        for name, value in (data.get(section) or {}).items():
            if "arn:aws:" in text_of(value):
                checker.fail(template, name, value, 'an "arn:aws:" literal: build the ARN with ${AWS::Partition}')


def check_queue_retention(checker, template, resources, manifest_queue):
    if manifest_queue is None:
        return
    props = resources[manifest_queue].get("Properties", {})
    target = props.get("RedrivePolicy", {}).get("deadLetterTargetArn", {})
    dlq = target.get("Fn::GetAtt", [None])[0] if isinstance(target, dict) else None
    if dlq not in resources:
        return
    dlq_props = resources[dlq].get("Properties", {})
    source_retention = props.get("MessageRetentionPeriod", 345600)
    dlq_retention = dlq_props.get("MessageRetentionPeriod", 345600)
    if not (isinstance(source_retention, int) and isinstance(dlq_retention, int) and dlq_retention > source_retention):
        checker.fail(
            template, dlq, dlq_props,
            f"the dead-letter queue must keep messages longer than {manifest_queue} (a dead-lettered "
            f"message keeps its enqueue time): {dlq_retention} <= {source_retention}",
        )
    allow = dlq_props.get("RedriveAllowPolicy") or {}
    name = props.get("QueueName")
    name_text = name["Fn::Sub"][0] if isinstance(name, dict) and isinstance(name.get("Fn::Sub"), list) else name
    if allow.get("redrivePermission") != "byQueue" or not name_text or text_of(name_text).strip('"') not in text_of(allow.get("sourceQueueArns")):
        checker.fail(
            template, dlq, dlq_props,
            f"RedriveAllowPolicy must be byQueue naming {manifest_queue} (give it a fixed QueueName and build its ARN)",
        )


def check_versioning(checker, template, data, bucket_name, bucket):
    parameters = data.get("Parameters", {})
    if parameters.get("EnableVersioning", {}).get("Default") != "true":
        checker.fail(template, "EnableVersioning", parameters.get("EnableVersioning"), "versioning of the archive bucket must default to true")
    if bucket is None:
        return
    props = bucket.get("Properties", {})
    if "Status" not in text_of(props.get("VersioningConfiguration")):
        checker.fail(template, bucket_name, props, "the archive bucket has no VersioningConfiguration")
    rules = []
    for rule in props.get("LifecycleConfiguration", {}).get("Rules", []):
        rules.extend(expand_if(rule))
    if not any(r.get("NoncurrentVersionExpiration") and not r.get("Prefix") for r in rules):
        checker.fail(template, bucket_name, props, "no bucket-wide lifecycle rule expires noncurrent versions")
    if "ObjectLockConfiguration" in props and "GOVERNANCE" not in text_of(props["ObjectLockConfiguration"]):
        checker.fail(template, bucket_name, props, "Object Lock must use GOVERNANCE mode")


def check_scaling(checker, template, resources):
    for name, service in of_type(resources, "AWS::ECS::Service").items():
        if "DesiredCount" in service.get("Properties", {}):
            checker.fail(
                template, name, service,
                "no DesiredCount on the service: CloudFormation sets it again on every update and "
                "drops the fleet that scaling grew",
            )
    policies = of_type(resources, "AWS::ApplicationAutoScaling::ScalingPolicy")
    if not of_type(resources, "AWS::ECS::Service"):
        return
    tracking = [
        (n, p) for n, p in policies.items()
        if p.get("Properties", {}).get("PolicyType") == "TargetTrackingScaling"
    ]
    backlog = [
        (n, p) for n, p in tracking
        if all(m in text_of(p) for m in ("ApproximateNumberOfMessagesVisible", "DesiredTaskCount"))
        and "RunningTaskCount" not in text_of(p)
        and "CustomizedMetricSpecification" in text_of(p)
    ]
    if not backlog:
        checker.fail(
            template, "AWS::ApplicationAutoScaling::ScalingPolicy", None,
            "no target tracking policy on the backlog per desired task (ApproximateNumberOfMessagesVisible / "
            "DesiredTaskCount; RunningTaskCount compounds scale-out while tasks start)",
        )
    for name, policy in backlog:
        config = policy["Properties"].get("TargetTrackingScalingPolicyConfiguration", {})
        if config.get("TargetValue") != {"Ref": "BacklogPerTaskTarget"}:
            checker.fail(template, name, policy, "the backlog target must be the parameter BacklogPerTaskTarget")
        if config.get("DisableScaleIn") is True:
            checker.fail(template, name, policy, "target tracking must be able to scale in (to zero)")
    # Target tracking never scales from 0: an alarm must drive a step policy that adds tasks.
    starters = {
        n for n, p in policies.items()
        if p.get("Properties", {}).get("PolicyType") == "StepScaling"
        and p["Properties"].get("StepScalingPolicyConfiguration", {}).get("AdjustmentType") == "ChangeInCapacity"
        and any(
            isinstance(s.get("ScalingAdjustment"), int) and s["ScalingAdjustment"] > 0
            for s in p["Properties"]["StepScalingPolicyConfiguration"].get("StepAdjustments", [])
        )
    }
    alarmed = {
        a.get("Ref") for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values()
        for a in as_list(alarm.get("Properties", {}).get("AlarmActions", [])) if isinstance(a, dict)
    }
    if not starters & alarmed:
        checker.fail(
            template, "AWS::ApplicationAutoScaling::ScalingPolicy", None,
            "no alarm drives a step policy that adds tasks: target tracking cannot scale out from zero",
        )


def alarm_seconds(props):
    periods = [q.get("MetricStat", {}).get("Period") for q in props.get("Metrics", []) if "MetricStat" in q]
    period = max([p for p in periods if isinstance(p, int)] or [props.get("Period", 60)])
    evaluations = props.get("EvaluationPeriods", 1)
    return period * evaluations if isinstance(evaluations, int) else None


def check_alarms(checker, template, resources, data):
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    namespace = emf_namespace() or "S3Bundler"
    for reason in ALARMED_REASONS:
        found = [
            n for n, a in alarms.items()
            if a.get("Properties", {}).get("Namespace") == namespace
            and a["Properties"].get("MetricName") == "ObjectsFailed"
            and a["Properties"].get("Dimensions") == [{"Name": "Reason", "Value": reason}]
            and a["Properties"].get("Threshold") == {"Ref": "FailedObjectsAlarmThreshold"}
            and {"Ref": "AlarmTopic"} in as_list(a["Properties"].get("AlarmActions", []))
        ]
        if not found:
            checker.fail(
                template, "AWS::CloudWatch::Alarm", None,
                f"no alarm on {namespace}/ObjectsFailed with Reason={reason} (threshold "
                f"FailedObjectsAlarmThreshold, to the AlarmTopic)",
            )
    stalled = [
        (n, a) for n, a in alarms.items()
        if all(m in text_of(a) for m in ("ApproximateNumberOfMessagesVisible", "RunningTaskCount"))
        and {"Ref": "AlarmTopic"} in as_list(a.get("Properties", {}).get("AlarmActions", []))
    ]
    if of_type(resources, "AWS::ECS::Service") and not stalled:
        checker.fail(template, "AWS::CloudWatch::Alarm", None, "no alarm on manifests waiting with no bundler task running")
    for name, alarm in stalled:
        seconds = alarm_seconds(alarm["Properties"])
        if seconds is None or seconds > STALL_ALARM_MAX_SECONDS - 180:
            checker.fail(
                template, name, alarm,
                f"the no-bundler alarm must fire within {STALL_ALARM_MAX_SECONDS // 60} minutes "
                f"(evaluates {seconds} s, plus a few minutes of metric delay)",
            )
    insights = data.get("Parameters", {}).get("ContainerInsights", {})
    if "disabled" in insights.get("AllowedValues", []) or insights.get("Default") == "disabled":
        checker.fail(template, "ContainerInsights", insights, "Container Insights cannot be disabled: scaling and alarms read its task counts")


def check_inventory_rule(checker, template, resources):
    rules = [
        (n, r) for n, r in of_type(resources, "AWS::Events::Rule").items()
        if "aws.s3" in text_of(r.get("Properties", {}).get("EventPattern"))
    ]
    if not rules:
        checker.fail(template, "AWS::Events::Rule", None, "no EventBridge rule runs the grouper on a new inventory manifest.json")
    for name, rule in rules:
        props = rule["Properties"]
        pattern = text_of(props.get("EventPattern"))
        if "Object Created" not in pattern or "/manifest.json" not in pattern or "${InventoryPrefix}" not in pattern:
            checker.fail(template, name, rule, "the rule must match Object Created of ${InventoryPrefix}…/manifest.json")
        targets = props.get("Targets", [])
        ok = [
            t for t in targets
            if t.get("EcsParameters", {}).get("TaskDefinitionArn") == {"Ref": "GrouperTaskDefinition"}
        ]
        if not ok:
            checker.fail(template, name, rule, "the rule must target the grouper task definition (GrouperTaskDefinition)")
        for target in ok:
            transformer = target.get("InputTransformer", {})
            command = text_of(transformer.get("InputTemplate"))
            if not all(s in command for s in ('containerOverrides', '\\"command\\": [\\"group\\"', '\\"-m\\", \\"s3://<bucket>/<key>\\"')):
                checker.fail(
                    template, name, target,
                    "the target's input must override the container command with group … -m s3://<bucket>/<key>",
                )
            paths = transformer.get("InputPathsMap", {})
            if paths.get("bucket") != "$.detail.bucket.name" or paths.get("key") != "$.detail.object.key":
                checker.fail(template, name, target, "InputPathsMap must take bucket and key from the S3 event's detail")


def grouper_stopped_rules(resources):
    """Rules on this cluster's grouper tasks stopping: {name: (rule, pattern text)}."""
    return {
        n: (r, text_of(r.get("Properties", {}).get("EventPattern")))
        for n, r in of_type(resources, "AWS::Events::Rule").items()
        if all(m in text_of(r.get("Properties", {}).get("EventPattern"))
               for m in ("ECS Task State Change", "family:${AWS::StackName}-grouper", "STOPPED"))
    }


def command_flags(value):
    """The options (-b, --max-messages, …) a command's text names, in any intrinsic form."""
    return set(re.findall(r'"(--?[a-z][a-z-]*)', text_of(value)))


def check_trigger(checker, template, data):
    """The hands-off trigger cannot fail silently: it needs InventoryPrefix, its target retries
    and dead-letters to an alarmed queue, a grouper that stops without exiting 0 alarms, and a
    grouper that exits 0 starts the first bundler at once."""
    resources = data.get("Resources", {})
    rules = data.get("Rules", {})
    if not any(
        "GroupNewInventories" in text_of(r.get("RuleCondition"))
        and '"Ref": "InventoryPrefix"' in text_of(r.get("Assertions")) and '"Fn::Not"' in text_of(r.get("Assertions"))
        for r in rules.values()
    ):
        checker.fail(template, "Rules", rules, "no rule requires InventoryPrefix while GroupNewInventories is on")
    for name, rule in of_type(resources, "AWS::Events::Rule").items():
        if "aws.s3" not in text_of(rule.get("Properties", {}).get("EventPattern")):
            continue
        for target in rule["Properties"].get("Targets", []):
            if not target.get("RetryPolicy"):
                checker.fail(template, name, target, "the inventory rule's target needs a RetryPolicy")
            dlq = target.get("DeadLetterConfig", {}).get("Arn", {})
            queue = dlq.get("Fn::GetAtt", [None])[0] if isinstance(dlq, dict) else None
            if resources.get(queue, {}).get("Type") != "AWS::SQS::Queue":
                checker.fail(template, name, target, "the inventory rule's target needs a DeadLetterConfig to a queue of the stack")
                continue
            allowed = [
                r for r in of_type(resources, "AWS::SQS::QueuePolicy").values()
                if {"Ref": queue} in r.get("Properties", {}).get("Queues", [])
                and f'"{name}"' in text_of(r["Properties"].get("PolicyDocument"))
            ]
            if not allowed:
                checker.fail(template, queue, None, f"no queue policy lets {name} (events.amazonaws.com) send to its dead-letter queue")
            alarmed = [
                a for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
                if f'"{queue}"' in text_of(a.get("Properties", {}).get("Dimensions"))
                and {"Ref": "AlarmTopic"} in as_list(a["Properties"].get("AlarmActions", []))
            ]
            if not alarmed:
                checker.fail(template, queue, None, f"no alarm (to the AlarmTopic) on the inventory rule's dead-letter queue {queue}")
    stopped = grouper_stopped_rules(resources)
    failed = {
        n: r for n, (r, pattern) in stopped.items()
        if '"anything-but": 0' in pattern
        and any(t.get("Arn") == {"Ref": "AlarmTopic"} for t in r["Properties"].get("Targets", []))
    }
    if not failed:
        checker.fail(
            template, "AWS::Events::Rule", None,
            "no rule sends a grouper task that stopped with a non-zero exit code to the AlarmTopic",
        )
    for name in failed:
        published = [
            p for p in of_type(resources, "AWS::SNS::TopicPolicy").values()
            if {"Ref": "AlarmTopic"} in p.get("Properties", {}).get("Topics", [])
            and f'"{name}"' in text_of(p["Properties"].get("PolicyDocument"))
        ]
        if not published:
            checker.fail(template, name, None, f"no topic policy lets {name} publish to the AlarmTopic")
    bundler = resources.get("BundlerTaskDefinition", {}).get("Properties", {}).get("ContainerDefinitions", [{}])[0]
    expected = command_flags(bundler.get("Command")) | {"--idle-timeout", "--task-protection"}
    starts = {
        n: t for n, (r, pattern) in stopped.items() if '"exitCode": [0]' in pattern
        for t in r["Properties"].get("Targets", [])
        if t.get("EcsParameters", {}).get("TaskDefinitionArn") == {"Ref": "BundlerTaskDefinition"}
    }
    if of_type(resources, "AWS::ECS::Service") and not starts:
        checker.fail(
            template, "AWS::Events::Rule", None,
            "no rule starts a bundler task when a grouper exits 0 (scaling waits ~15 minutes on SQS metrics)",
        )
    for name, target in starts.items():
        found = command_flags(target.get("Input"))
        if found != expected:
            checker.fail(
                template, name, target,
                f"the started bundler's command must be the bundler task definition's plus --idle-timeout "
                f"and --task-protection: missing {sorted(expected - found)}, extra {sorted(found - expected)}",
            )


def check_spot_rule(checker, template, resources):
    """Tasks stopped by spot are counted on Fargate (stop code) and on EC2 (drained instance)."""
    for name, rule in of_type(resources, "AWS::Events::Rule").items():
        pattern = text_of(rule.get("Properties", {}).get("EventPattern"))
        if "Spot Instance Interruption Warning" in pattern and not all(
            m in pattern for m in ('"SpotInterruption"', "*draining*", "Host EC2*terminated*")
        ):
            checker.fail(
                template, name, rule,
                "the spot rule must match tasks stopped by Fargate Spot (stopCode SpotInterruption) and by "
                "EC2 spot (stoppedReason of a draining or terminated instance)",
            )


def check_dashboard(checker, template, resources):
    for name, dashboard in of_type(resources, "AWS::CloudWatch::Dashboard").items():
        body = text_of(dashboard.get("Properties", {}).get("DashboardBody"))
        missing = sorted(m for m in ASG_CAPACITY_METRICS | {"RunningTaskCount"} if m not in body)
        if missing:
            checker.fail(template, name, dashboard, f"the dashboard does not show {missing}")


def check_core(checker, template, data):
    resources = data.get("Resources", {})
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
        if bucket.get("DeletionPolicy") != "RetainExceptOnCreate":
            checker.fail(
                template, bucket_name, bucket,
                "DeletionPolicy must be RetainExceptOnCreate: kept with its archives, but a failed "
                "creation must not leave it behind to make the retry fail on 'already exists'",
            )
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
    check_queue_retention(checker, template, resources, manifest_queue)
    check_versioning(checker, template, data, bucket_name, bucket)
    check_scaling(checker, template, resources)
    check_alarms(checker, template, resources, data)
    check_inventory_rule(checker, template, resources)
    check_trigger(checker, template, data)
    check_spot_rule(checker, template, resources)
    check_dashboard(checker, template, resources)
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        for container in resource.get("Properties", {}).get("ContainerDefinitions", []):
            if not container.get("StopTimeout"):
                checker.fail(template, name, container, "containers need a StopTimeout so SIGTERM gives time to release the message")


def check_compute(checker, template, data):
    resources = data.get("Resources", {})
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
        collected = {m for c in props.get("MetricsCollection", []) for m in c.get("Metrics", [])}
        if not ASG_CAPACITY_METRICS <= collected:
            checker.fail(
                template, asg_name, asg,
                f"MetricsCollection must collect {sorted(ASG_CAPACITY_METRICS - collected)} for the dashboard",
            )
        exported = [
            o for o in data.get("Outputs", {}).values()
            if o.get("Value") == {"Ref": asg_name} and "AutoScalingGroupName" in text_of(o.get("Export"))
        ]
        if not exported:
            checker.fail(template, asg_name, asg, "the Auto Scaling group's name must be exported (<stack>-AutoScalingGroupName) for the dashboard")
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
    check_kms(checker, template, data)
    check_resource_policies(checker, template, resources)
    check_partition_literals(checker, template, data)
    if template.name == "core.yaml":
        check_core(checker, template, data)
    elif template.name == "compute.yaml":
        check_compute(checker, template, data)
        check_ami_parameter(checker, template, data.get("Parameters", {}))
    else:
        checker.fail(template, "template", None, "unknown template: add its checks to deploy/check_templates.py")


def role_statements(data, role):
    return data["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def statement(data, role, sid):
    return next(s for s in role_statements(data, role) if isinstance(s, dict) and s.get("Sid") == sid)


def kms_statement(data, role, sid):
    """A statement of the role's inline policy that is the true branch of an Fn::If."""
    for item in role_statements(data, role):
        if isinstance(item, dict) and "Fn::If" in item and item["Fn::If"][1].get("Sid") == sid:
            return item["Fn::If"][1]
    raise KeyError(sid)


def operator_statement(data, policy, sid):
    document = data["Resources"][policy]["Properties"]["PolicyDocument"]
    return next(s for s in document["Statement"] if isinstance(s, dict) and s.get("Sid") == sid)


def props(data, name):
    return data["Resources"][name]["Properties"]


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
    ("core.yaml", "prune deletes archives", lambda d: operator_statement(d, "PrunePolicy", "DeleteSourceObjects").update(Resource={"Fn::Sub": "${ArchiveBucket.Arn}/*"}), "s3:DeleteObject must only apply"),
    ("core.yaml", "redrive overwrites manifests", lambda d: operator_statement(d, "RedrivePolicy", "WriteRedriveManifests").update(Resource={"Fn::Sub": "${ArchiveBucket.Arn}/${ManifestPrefix}/*"}), "s3:PutObject must only apply"),
    ("core.yaml", "restore anywhere", lambda d: operator_statement(d, "RestorePolicy", "RestoreArchives").update(Resource="*"), "s3:RestoreObject must only apply"),
    ("core.yaml", "redrive sends to any queue", lambda d: operator_statement(d, "RedrivePolicy", "QueueRedriveManifests").update(Resource="*"), "sqs:SendMessage"),
    ("core.yaml", "prune writes beside manifests", lambda d: operator_statement(d, "PrunePolicy", "WriteDeletionLogs").update(Resource={"Fn::Sub": "${ArchiveBucket.Arn}/${ManifestPrefix}/*"}), "s3:PutObject must only apply"),
    ("core.yaml", "verify policy writes", lambda d: operator_statement(d, "VerifyPolicy", "ReadManifestsAndArchives").update(Action=["s3:GetObject", "s3:PutObject"]), "action s3:PutObject is not expected for VerifyPolicy"),
    ("core.yaml", "verify policy lost GetObjectVersion", lambda d: operator_statement(d, "VerifyPolicy", "HeadSourceObjects").update(Action="s3:GetObject"), "expected actions not granted: ['s3:GetObjectVersion']"),
    ("core.yaml", "operator policy on a task role", lambda d: props(d, "PrunePolicy").update(Roles=[{"Ref": "BundlerTaskRole"}]), "attach it to people"),
    ("core.yaml", "operator policy missing", lambda d: d["Resources"].pop("VerifyPolicy"), "expected operator managed policy is missing"),
    ("core.yaml", "another managed policy", lambda d: d["Resources"].update(ExtraPolicy=dict(d["Resources"]["PrunePolicy"])), "ExtraPolicy"),
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
    ("core.yaml", "kms without ViaService", lambda d: kms_statement(d, "BundlerTaskRole", "ArchiveKmsKey").pop("Condition"), "kms:ViaService"),
    ("core.yaml", "kms ViaService literal region", lambda d: kms_statement(d, "GrouperTaskRole", "InventoryKmsKeys")["Condition"]["StringEquals"].update({"kms:ViaService": "s3.us-east-1.amazonaws.com"}), "without exactly the condition"),
    ("core.yaml", "kms ViaService any service", lambda d: kms_statement(d, "BundlerTaskRole", "SourceKmsKeys").update(Condition={"StringLike": {"kms:ViaService": "*"}}), "without exactly the condition"),
    ("core.yaml", "operator kms without ViaService", lambda d: operator_statement(d, "PruneKmsPolicy", "ArchiveKmsKey").pop("Condition"), "grants ['kms:GenerateDataKey'] without exactly"),
    ("core.yaml", "kms mixed with s3", lambda d: kms_statement(d, "GrouperTaskRole", "ArchiveKmsKey").update(Action=["kms:Decrypt", "s3:GetObject"]), "mixes kms:*"),
    ("core.yaml", "grouper without inventory key", lambda d: role_statements(d, "GrouperTaskRole").remove({"Fn::If": ["InventoryKms", kms_statement(d, "GrouperTaskRole", "InventoryKmsKeys"), {"Ref": "AWS::NoValue"}]}), "InventoryKmsKeyArns under the InventoryKms"),
    ("core.yaml", "no inventory key parameter", lambda d: d["Parameters"].pop("InventoryKmsKeyArns"), "inventory reports' KMS keys"),
    ("core.yaml", "bundler gets inventory key", lambda d: kms_statement(d, "BundlerTaskRole", "SourceKmsKeys").update(Resource={"Ref": "InventoryKmsKeyArns"}), "kms:Decrypt must only apply"),
    ("core.yaml", "grouper writes with source key", lambda d: kms_statement(d, "GrouperTaskRole", "ArchiveKmsKey").update(Resource={"Ref": "SourceKmsKeyArns"}), "kms:GenerateDataKey must only apply"),
    ("core.yaml", "operator kms policy unconditional", lambda d: d["Resources"]["VerifyKmsPolicy"].pop("Condition"), "only under Condition ArchiveKms"),
    ("core.yaml", "operator kms policy without output", lambda d: d["Outputs"].pop("PruneKmsPolicyArn"), "needs an output"),
    ("core.yaml", "operator kms output unconditional", lambda d: d["Outputs"]["VerifyKmsPolicyArn"].pop("Condition"), "needs an output"),
    ("core.yaml", "If statement in a managed policy", lambda d: props(d, "VerifyPolicy")["PolicyDocument"]["Statement"].append({"Fn::If": ["ArchiveKms", operator_statement(d, "VerifyKmsPolicy", "ArchiveKmsKey"), {"Ref": "AWS::NoValue"}]}), "Fn::If statement"),
    ("core.yaml", "verify kms policy writes", lambda d: operator_statement(d, "VerifyKmsPolicy", "ArchiveKmsKey").update(Action=["kms:Decrypt", "kms:GenerateDataKey"]), "not expected for VerifyKmsPolicy"),
    ("compute.yaml", "no spot draining", lambda d: d["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"].update(UserData="#!/bin/bash"), "SPOT_INSTANCE_DRAINING"),
    ("compute.yaml", "no termination protection", lambda d: d["Resources"]["CapacityProvider"]["Properties"]["AutoScalingGroupProvider"].update(ManagedTerminationProtection="DISABLED"), "ManagedTerminationProtection"),
    ("compute.yaml", "unprotected instances", lambda d: d["Resources"]["AutoScalingGroup"]["Properties"].update(NewInstancesProtectedFromScaleIn=False), "NewInstancesProtectedFromScaleIn"),
    ("compute.yaml", "fixed AMI", lambda d: d["Parameters"]["EcsAmiId"].update(Default="ami-12345678"), "SSM"),
    ("core.yaml", "service DesiredCount", lambda d: props(d, "BundlerService").update(DesiredCount=0), "no DesiredCount"),
    ("core.yaml", "no backlog tracking", lambda d: d["Resources"].pop("BundlerBacklogPolicy"), "backlog per desired task"),
    ("core.yaml", "backlog per running task", lambda d: props(d, "BundlerBacklogPolicy")["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"][2]["MetricStat"]["Metric"].update(MetricName="RunningTaskCount"), "backlog per desired task"),
    ("core.yaml", "backlog no scale-in", lambda d: props(d, "BundlerBacklogPolicy")["TargetTrackingScalingPolicyConfiguration"].update(DisableScaleIn=True), "scale in"),
    ("core.yaml", "no scale from zero", lambda d: d["Resources"].pop("ManifestsWaitingAlarm"), "scale out from zero"),
    ("core.yaml", "dlq retention short", lambda d: props(d, "ManifestDeadLetterQueue").update(MessageRetentionPeriod=345600), "longer than"),
    ("core.yaml", "no redrive allow policy", lambda d: props(d, "ManifestDeadLetterQueue").pop("RedriveAllowPolicy"), "RedriveAllowPolicy"),
    ("core.yaml", "versioning off by default", lambda d: d["Parameters"]["EnableVersioning"].update(Default="false"), "default to true"),
    ("core.yaml", "no noncurrent expiry", lambda d: bucket_props(d)["LifecycleConfiguration"]["Rules"].pop(), "noncurrent"),
    ("core.yaml", "object lock compliance", lambda d: bucket_props(d)["ObjectLockConfiguration"]["Fn::If"][1]["Rule"]["DefaultRetention"].update(Mode="COMPLIANCE"), "GOVERNANCE"),
    ("core.yaml", "arn:aws literal", lambda d: statement(d, "BundlerTaskRole", "ReadManifests").update(Resource="arn:aws:s3:::bucket/manifests/*"), "arn:aws:"),
    ("core.yaml", "no AccessDenied alarm", lambda d: d["Resources"].pop("AccessDeniedObjectsAlarm"), "Reason=AccessDenied"),
    ("core.yaml", "Retry alarm metric", lambda d: props(d, "RetryObjectsAlarm").update(MetricName="Errors"), "Reason=Retry"),
    ("core.yaml", "no stall alarm", lambda d: d["Resources"].pop("NoBundlerRunningAlarm"), "no bundler task running"),
    ("core.yaml", "stall alarm slow", lambda d: props(d, "NoBundlerRunningAlarm").update(EvaluationPeriods=30, DatapointsToAlarm=30), "within 15 minutes"),
    ("core.yaml", "insights can be disabled", lambda d: d["Parameters"]["ContainerInsights"]["AllowedValues"].append("disabled"), "Container Insights"),
    ("core.yaml", "no inventory rule", lambda d: d["Resources"].pop("NewInventoryRule"), "new inventory"),
    ("core.yaml", "archive bucket retained on failed create", lambda d: d["Resources"]["ArchiveBucket"].update(DeletionPolicy="Retain"), "RetainExceptOnCreate"),
    ("core.yaml", "trigger without InventoryPrefix", lambda d: d["Rules"].pop("InventoryPrefixWithTrigger"), "requires InventoryPrefix"),
    ("core.yaml", "inventory target without retries", lambda d: props(d, "NewInventoryRule")["Targets"][0].pop("RetryPolicy"), "RetryPolicy"),
    ("core.yaml", "inventory target without dead letters", lambda d: props(d, "NewInventoryRule")["Targets"][0].pop("DeadLetterConfig"), "DeadLetterConfig"),
    ("core.yaml", "inventory dead letters not allowed", lambda d: d["Resources"].pop("InventoryEventsDeadLetterQueuePolicy"), "send to its dead-letter queue"),
    ("core.yaml", "inventory dead letters not alarmed", lambda d: d["Resources"].pop("InventoryEventsDeadLetterAlarm"), "no alarm (to the AlarmTopic) on the inventory rule's dead-letter"),
    ("core.yaml", "dead-letter queue open to events", lambda d: props(d, "InventoryEventsDeadLetterQueuePolicy")["PolicyDocument"]["Statement"][0].pop("Condition"), "events.amazonaws.com conditioned"),
    ("core.yaml", "no grouper failure alarm", lambda d: d["Resources"].pop("GrouperFailedRule"), "non-zero exit code"),
    ("core.yaml", "grouper failure to nowhere", lambda d: props(d, "GrouperFailedRule")["Targets"][0].update(Arn={"Ref": "ManifestQueue"}), "non-zero exit code"),
    ("core.yaml", "grouper failure cannot publish", lambda d: d["Resources"].pop("AlarmTopicPolicy"), "publish to the AlarmTopic"),
    ("core.yaml", "topic open to any rule", lambda d: props(d, "AlarmTopicPolicy")["PolicyDocument"]["Statement"][0].pop("Condition"), "topic policy may only"),
    ("core.yaml", "no first bundler", lambda d: d["Resources"].pop("BundlerStartRule"), "starts a bundler task when a grouper exits 0"),
    ("core.yaml", "first bundler never exits", lambda d: props(d, "BundlerStartRule")["Targets"][0].update(Input={"Fn::Sub": [props(d, "BundlerStartRule")["Targets"][0]["Input"]["Fn::Sub"][0].replace(', "--idle-timeout=300"', ""), props(d, "BundlerStartRule")["Targets"][0]["Input"]["Fn::Sub"][1]]}), "missing ['--idle-timeout']"),
    ("core.yaml", "first bundler command drifts", lambda d: props(d, "BundlerTaskDefinition")["ContainerDefinitions"][0]["Command"].append("--retry-for=600"), "missing ['--retry-for']"),
    ("core.yaml", "spot rule for Fargate only", lambda d: props(d, "SpotInterruptionRule")["EventPattern"]["$or"].pop(2), "EC2 spot"),
    ("core.yaml", "start role runs any task", lambda d: statement(d, "BundlerStartRole", "RunBundlerTask").update(Resource={"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task-definition/*"}), "ecs:RunTask must only apply"),
    ("core.yaml", "inventory rule runs bundler", lambda d: props(d, "NewInventoryRule")["Targets"][0]["EcsParameters"].update(TaskDefinitionArn={"Ref": "BundlerTaskDefinition"}), "grouper task definition"),
    ("core.yaml", "inventory rule without -m", lambda d: props(d, "NewInventoryRule")["Targets"][0]["InputTransformer"].update(InputTemplate='{"containerOverrides": [{"name": "s3bundler", "command": ["group"]}]}'), "-m s3://<bucket>/<key>"),
    ("core.yaml", "inventory rule any key", lambda d: props(d, "NewInventoryRule")["EventPattern"]["detail"].pop("object"), "manifest.json"),
    ("core.yaml", "events role passes bundler role", lambda d: statement(d, "GrouperEventsRole", "PassGrouperRoles")["Resource"].append({"Fn::GetAtt": ["BundlerTaskRole", "Arn"]}), "iam:PassRole must only apply"),
    ("core.yaml", "events role runs any task", lambda d: statement(d, "GrouperEventsRole", "RunGrouperTask").update(Resource={"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task-definition/*"}), "ecs:RunTask must only apply"),
    ("core.yaml", "dashboard without capacity", lambda d: props(d, "Dashboard")["DashboardBody"]["Fn::Sub"][1].update(CapacityWidget=""), "dashboard does not show"),
    ("compute.yaml", "no group metrics", lambda d: props(d, "AutoScalingGroup").pop("MetricsCollection"), "MetricsCollection"),
    ("compute.yaml", "group name not exported", lambda d: d["Outputs"]["AutoScalingGroupName"].pop("Export"), "exported"),
    ("compute.yaml", "arn:aws literal in compute", lambda d: props(d, "InstanceRole").update(ManagedPolicyArns=["arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"]), "arn:aws:"),
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
