#!/usr/bin/env python3
"""IAM, proven: runs s3bundler as IAM users holding exactly the core stack's policies, in a moto
server that enforces IAM, and checks that every call the binary makes is allowed and that calls
outside the policies are denied.

Usage:
    iam_enforced.py --bundler BINARY [--region REGION]

Run by scripts/lint-deploy --bundler BINARY (so by scripts/test); needs the project venv
(scripts/venv: moto[server] 5.2.5, boto3). About 15 seconds.

What it does:
  1. Starts a moto server of its own on a free port with INITIAL_NO_AUTH_ACTION_COUNT=3: the
     first three requests (CreateUser, PutUserPolicy, CreateAccessKey of an `admin` user whose
     inline policy allows everything) are unauthenticated; every later request must be signed
     with the keys of an IAM user created in moto and is authorized against that user's policies.
     The tool first checks that an unknown key is refused (InvalidAccessKeyId).
  2. As admin: creates the core stack (deploy/cloudformation/core.yaml, CapacityType=NONE) in
     moto's CloudFormation, the source, inventory and an unrelated bucket, 20 source objects and
     a CSV inventory of them, and puts the template's manifest notification through the S3 API
     (moto's CloudFormation ignores it; see tests/tools/cfn_stack.py).
  3. Reads the policies back from moto's IAM, intrinsics resolved: the inline policies of
     GrouperTaskRole and BundlerTaskRole, and the managed policies VerifyPolicy and PrunePolicy
     (stack outputs VerifyPolicyArn, PrunePolicyArn; the template's operator policies). Creates
     one IAM user per role with exactly those documents: `grouper` (GrouperTaskRole's inline
     policies), `bundler` (BundlerTaskRole's), `verifier` (VerifyPolicy attached), `pruner`
     (VerifyPolicy and PrunePolicy attached) and `redriver` (VerifyPolicy and RedrivePolicy).
  4. Runs the binary with each user's keys (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
     --endpoint-url, AWS_REGION, AWS_EC2_METADATA_DISABLED=true, no profile):
       * grouper: `group` + the GroupOptions output + `-m INVENTORY` (as `s3bundler submit`);
       * grouper of a second stack on an existing archive bucket (ExistingArchiveBucket: no
         notification, GroupOptions has --queue=URL): the same, and its manifest must arrive on
         that stack's queue (sqs:SendMessage);
       * before the worker, as admin: a stale DLQ `MANIFEST.dlq` beside one manifest, and an
         incomplete multipart upload at that manifest's archive key (a killed worker's, started
         before the next attempt: the lease holder lists and aborts it);
       * and a second manifest whose lease another worker holds (a live `.lease` of another
         host) on the queue;
       * bundler: the bundler task definition's container command as moto's ECS returns it
         (`bundle -q QUEUE_URL ...`) plus --wait-time=1 --idle-timeout=3: must exit 0, archive
         every object, delete the stale DLQ, abort the orphaned upload, delete the message, and
         leave the busy manifest alone with its message put off (a delayed copy sent with
         sqs:SendMessage, the received one deleted);
       * verifier: `verify --deep` over the manifest prefix: exit 0;
       * verifier: `prune --yes`: must fail with exit 4 (deletions and the .pruned log refused)
         and delete nothing (a binary command denied by the policy);
       * pruner: `prune --yes`: exit 0, every source object deleted, the .pruned log written;
       * redriver (VerifyPolicy and RedrivePolicy): `redrive --yes -q QUEUE` over a DLQ row
         beside the committed manifest: exit 0, one redrive manifest written and queued;
       * the way back: the verifier `locate`s a pruned object through the catalog; its archive is
         moved to DEEP_ARCHIVE; `restore --yes` by source key is refused to the verifier and
         done by the restorer (VerifyPolicy and RestorePolicy); `restore --status` as the
         verifier lists the archive.
  5. Denied with boto3 and the users' own keys (AccessDenied expected): the bundler deleting a
     source object, reading the unrelated bucket and writing a manifest; the grouper receiving
     from the manifest queue and reading a source object; the verifier writing to the archive
     prefix, or restoring an archive; the restorer restoring an object of the unrelated bucket.

moto's IAM enforcement is partial; what it does not check is checked with moto's own policy
evaluator (moto.iam.access_control.IAMPolicy, the code the server uses) against the resource AWS
authorizes ("OfflineChecks"), and is listed in deploy/README.md ("IAM, proven"):
  * CopyObject and UploadPartCopy: moto authorizes s3:PutObject on the destination only, not
    s3:GetObject on the copy source. Checked offline: the grouper may s3:GetObject a staged
    manifest (it reads each one back to put it in place with a conditional PutObject).
  * DeleteObjects: moto authorizes s3:DeleteObject on the bucket's ARN (arn:aws:s3:::BUCKET)
    once for the whole request, where AWS authorizes s3:DeleteObject (s3:DeleteObjectVersion for
    a version) on each object's ARN. PrunePolicy rightly grants it on arn:*:s3:::SOURCE/* only,
    which moto never matches, so the pruner gets one extra inline policy,
    `moto-deleteobjects-workaround`: the same actions on the source buckets' ARNs (a grant AWS
    ignores: s3:DeleteObject has no bucket resource). Checked offline: PrunePolicy alone allows
    s3:DeleteObject on every object the .pruned log lists.
  * HEAD and GET with versionId: moto authorizes s3:GetObject for a HEAD whatever the version;
    AWS wants s3:GetObjectVersion for a version (both policies grant both).
  * Conditions, KMS and bucket policies are not evaluated by moto (the stack has no KMS keys here;
    moto's CloudFormation does not create AWS::S3::BucketPolicy or AWS::SQS::QueuePolicy).
  * sqs:GetQueueUrl by name: moto authorizes it against "*" (it looks for a QueueUrl), so a grant
    scoped to the queue's ARN is refused. The templates give the binary queue URLs, so it makes
    no GetQueueUrl call here; a refusal would show as a 403 in the step's "refused" count.
Quirks worked around, not authorization: a role's inline policy created by moto's CloudFormation
comes back from GetRolePolicy as a Python repr (parsed with ast.literal_eval); an !If giving
AWS::NoValue stays a null statement (dropped, as CloudFormation does); a refused SQS JSON request
gets an XML error botocore cannot parse (the code is read from its message); DeleteObjects
refused per key answers 200 with AccessDenied errors, as S3 does, so moto logs no 403 for it.
Every binary step that must succeed must also have no 403 in moto's log while it ran.

Prints one JSON object (each step's exit code and findings, "Denied", "OfflineChecks", "Ok") and
exits 1 if anything was not as expected.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cfn_stack  # noqa: E402

SOURCE = "test-source"
INVENTORY = "test-inventory"
UNRELATED = "test-unrelated"
STACK = "iam-core"
STACK_EXISTING = "iam-existing"
EXISTING = "test-existing-archive"
# CreateUser, PutUserPolicy and CreateAccessKey of the admin; everything after is authorized.
NO_AUTH_REQUESTS = 3
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log):
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(NO_AUTH_REQUESTS))
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/")
            return process, endpoint
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"ERROR: moto_server did not start on {endpoint}")


class Keys:
    def __init__(self, name, key_id, secret):
        self.name, self.key_id, self.secret = name, key_id, secret

    def client(self, service, args):
        return boto3.client(
            service, endpoint_url=args.endpoint, region_name=args.region,
            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
        )


def create_user(iam, name, inline=(), attached=()):
    iam.create_user(UserName=name)
    for policy_name, document in inline:
        iam.put_user_policy(UserName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    for arn in attached:
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(name, key["AccessKeyId"], key["SecretAccessKey"])


def role_policies(iam, outputs, logical_id):
    """The role's inline policies as moto's IAM holds them (intrinsics resolved); the role is
    found by its ARN in the stack outputs."""
    name = outputs[f"{logical_id}Arn"].rsplit("/", 1)[-1]
    policies = []
    for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
        document = cfn_stack.policy_document(document)
        # moto keeps an !If item that gives AWS::NoValue as a null statement (CloudFormation
        # drops it), and its PutUserPolicy refuses a null statement.
        document["Statement"] = [s for s in statements_of(document) if s is not None]
        policies.append((policy_name, document))
    if iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        raise SystemExit(f"ERROR: {logical_id} has managed policies; copy them to its user too")
    return policies


def managed_document(iam, arn):
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    version = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
    document = version["PolicyVersion"]["Document"]
    return document if isinstance(document, dict) else json.loads(document)


def statements_of(document):
    items = document.get("Statement", [])
    return items if isinstance(items, list) else [items]


def delete_objects_workaround(documents):
    """moto authorizes DeleteObjects as s3:DeleteObject on arn:aws:s3:::BUCKET: the same
    delete actions on the bucket ARNs of the objects the policies let the user delete."""
    buckets = set()
    for document in documents:
        for statement in statements_of(document):
            actions = statement.get("Action", [])
            actions = actions if isinstance(actions, list) else [actions]
            resources = statement.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            if statement.get("Effect") == "Allow" and "s3:DeleteObject" in actions:
                buckets.update(r[: -len("/*")] for r in resources if r.endswith("/*") and r.count("/") == 1)
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "MotoAuthorizesDeleteObjectsOnTheBucket",
            "Effect": "Allow",
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": sorted(buckets),
        }],
    }


def allowed_offline(documents, action, resource):
    """moto's own evaluator (what the server runs) on the resource AWS authorizes."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    results = [IAMPolicy(json.dumps(d)).is_action_permitted(action, resource) for d in documents]
    return PermissionResult.DENIED not in results and PermissionResult.PERMITTED in results


def manifest_name(key):
    base = key.rsplit("/", 1)[-1]
    if base[-1:].isdigit():
        return base
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def archive_key(prefix, source, manifest_key, command):
    name = manifest_name(manifest_key)
    digest = hashlib.md5(f"{source}/{name}".encode()).hexdigest()[:6]
    extension = "tar"
    for item in command:
        if item in ("-c", "--compress=gzip"):
            extension = "tar.gz"
        elif item == "--compress=zstd":
            extension = "tar.zst"
    return f"{prefix}/{digest}/{source}/{name}.{extension}"


def binary(path):
    # Another process may be rebuilding it: wait for it to come back.
    for _ in range(120):
        if os.access(path, os.X_OK):
            return path
        time.sleep(1)
    raise SystemExit(f"ERROR: {path} is not an executable")


def moto_log_lines(args):
    args.log.seek(0)
    return args.log.read().decode(errors="replace").splitlines()


def run(args, keys, command, timeout=180):
    """Runs the binary as `keys`' user; also counts the requests moto logged meanwhile and
    those it answered 403 (refused by IAM: AccessDenied)."""
    before = len(moto_log_lines(args))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=keys.key_id, AWS_SECRET_ACCESS_KEY=keys.secret, AWS_REGION=args.region,
        AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    full = [binary(args.bundler), "--endpoint-url", args.endpoint, *command]
    done = subprocess.run(full, env=env, capture_output=True, text=True, timeout=timeout)
    requests = [line for line in moto_log_lines(args)[before:] if "HTTP/1.1" in line]
    refused = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in requests if re.search(r'" 403 ', line)]
    return {
        "user": keys.name, "command": command, "exit": done.returncode, "stdout": done.stdout,
        "stderr": done.stderr, "requests": len(requests), "refused": len(refused), "refused_requests": refused[:5],
    }


def denied(call):
    """The AWS error code of a refused call, or "allowed"."""
    try:
        call()
    except botocore.exceptions.ClientError as error:
        details = error.response.get("Error", {})
        code = details.get("Code", "?")
        # moto answers a refused SQS request of the JSON protocol with the query protocol's XML
        # error (as text/html), which botocore cannot parse: the code is in the message.
        found = re.search(r"<Code>([^<]+)</Code>", details.get("Message", ""))
        if code == "403" and found:
            code = found.group(1)
        return code
    return "allowed"


def drain(sqs, queue_url):
    """The JSON bodies on a queue (group --queue sends {"Bucket": ..., "Key": ...})."""
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def keys_under(s3, bucket, prefix):
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(o["Key"] for o in page.get("Contents", []))
    return found


def short(step):
    """A step's result without its full output (the tail of stderr on failure)."""
    out = {k: v for k, v in step.items() if k not in ("stdout", "stderr")}
    out["log_tail"] = step["stderr"].splitlines()[-6:]
    return out


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundler", required=True, metavar="BINARY")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    binary(args.bundler)
    log = args.log = tempfile.TemporaryFile()
    moto, args.endpoint = start_moto(log)
    try:
        result = prove(args)
    except BaseException:
        log.seek(0)
        print("moto_server's log, last lines:\n" + "\n".join(log.read().decode(errors="replace").splitlines()[-80:]),
              file=sys.stderr)
        raise
    finally:
        moto.send_signal(signal.SIGTERM)
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    print()
    if not result["Ok"]:
        raise SystemExit("ERROR: IAM, proven: not as expected:\n  " + "\n  ".join(result["Failures"]))


def prove(args):
    result = {"Endpoint": args.endpoint}
    failures = []

    def expect(condition, what):
        if not condition:
            failures.append(what)

    # 1. The admin, with the only unauthenticated requests; then enforcement is on.
    anonymous = Keys("anonymous", "testing", "testing")
    iam0 = anonymous.client("iam", args)
    admin = create_user(iam0, "admin", inline=[("admin", ADMIN_POLICY)])
    unknown = denied(lambda: anonymous.client("s3", args).list_buckets())
    result["UnknownKeyRefused"] = unknown
    expect(unknown == "InvalidAccessKeyId", f"an unknown key was not refused ({unknown}): IAM is not enforced")

    # 2. The stack and the data, as admin (cfn_stack's helpers read the keys from the environment).
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = admin.key_id, admin.secret
    stack_args = argparse.Namespace(endpoint=args.endpoint, region=args.region, timeout=args.timeout,
                                    parameters=dict(cfn_stack.DEFAULT_PARAMETERS))
    outputs = cfn_stack.create_stack(stack_args, STACK, cfn_stack.DEFAULT_TEMPLATE, dict(cfn_stack.DEFAULT_PARAMETERS))
    s3a, sqsa, iam, ecs = (admin.client(s, args) for s in ("s3", "sqs", "iam", "ecs"))
    bucket, manifests, archives = outputs["ArchiveBucketName"], outputs["ManifestPrefix"], outputs["ArchivePrefix"]
    queue = outputs["ManifestQueueUrl"]
    for name in (SOURCE, INVENTORY, UNRELATED):
        s3a.create_bucket(Bucket=name)
    s3a.put_object(Bucket=UNRELATED, Key="secret.txt", Body=b"not for s3bundler")
    objects = {f"iam/{i:02d} object+{i}.txt": b"y" * (200 + i) for i in range(20)}
    for key, body in objects.items():
        s3a.put_object(Bucket=SOURCE, Key=key, Body=body)
    inventory = cfn_stack.put_inventory(s3a, SOURCE, INVENTORY, objects)
    cfn_stack.replay_notification(s3a, outputs)
    cfn_stack.received_keys(sqsa, queue)  # the s3:TestEvent

    # 3. One user per role, with the policies read back from moto's IAM.
    grouper_policies = role_policies(iam, outputs, "GrouperTaskRole")
    bundler_policies = role_policies(iam, outputs, "BundlerTaskRole")
    verify_arn, prune_arn = outputs["VerifyPolicyArn"], outputs["PrunePolicyArn"]
    redrive_arn, restore_arn = outputs["RedrivePolicyArn"], outputs["RestorePolicyArn"]
    verify_doc, prune_doc = managed_document(iam, verify_arn), managed_document(iam, prune_arn)
    redrive_doc, restore_doc = managed_document(iam, redrive_arn), managed_document(iam, restore_arn)
    workaround = delete_objects_workaround([prune_doc])
    users = {
        "grouper": create_user(iam, "grouper", inline=grouper_policies),
        "bundler": create_user(iam, "bundler", inline=bundler_policies),
        "verifier": create_user(iam, "verifier", attached=[verify_arn]),
        "pruner": create_user(iam, "pruner", inline=[("moto-deleteobjects-workaround", workaround)],
                              attached=[verify_arn, prune_arn]),
        "redriver": create_user(iam, "redriver", attached=[verify_arn, redrive_arn]),
        "restorer": create_user(iam, "restorer", attached=[verify_arn, restore_arn]),
    }
    result["Policies"] = {
        "grouper": {name: doc for name, doc in grouper_policies},
        "bundler": {name: doc for name, doc in bundler_policies},
        "verifier": {"VerifyPolicy": verify_doc},
        "pruner": {"VerifyPolicy": verify_doc, "PrunePolicy": prune_doc, "moto-deleteobjects-workaround": workaround},
        "redriver": {"VerifyPolicy": verify_doc, "RedrivePolicy": redrive_doc},
        "restorer": {"VerifyPolicy": verify_doc, "RestorePolicy": restore_doc},
    }

    # 4a. group, as the grouper.
    group = ["group", *outputs["GroupOptions"].split(), "-m", inventory]
    step = run(args, users["grouper"], group)
    result["Group"] = short(step)
    expect(step["exit"] == 0, f"group as the grouper exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"group as the grouper: moto refused {step['refused']} request(s): {step['refused_requests']}")
    manifest_keys = sorted(
        k for k in keys_under(s3a, bucket, manifests + "/") if k.endswith(".index") and "/_staging/" not in k
    )
    result["Manifests"] = manifest_keys
    expect(manifest_keys, "the grouper wrote no manifest")
    staged = keys_under(s3a, bucket, f"{manifests}/_staging/")
    expect(not staged, f"staged manifests left behind: {staged}")

    # 4a'. An existing archive bucket's stack: its grouper queues the manifests itself
    # (--queue=URL: sqs:SendMessage, which the notification makes unneeded above).
    existing = dict(cfn_stack.DEFAULT_PARAMETERS, ExistingArchiveBucket=EXISTING)
    s3a.create_bucket(Bucket=EXISTING)
    other = cfn_stack.create_stack(stack_args, STACK_EXISTING, cfn_stack.DEFAULT_TEMPLATE, existing)
    users["grouper-existing"] = create_user(iam, "grouper-existing", inline=role_policies(iam, other, "GrouperTaskRole"))
    group = ["group", *other["GroupOptions"].split(), "-m", inventory]
    step = run(args, users["grouper-existing"], group)
    queued = [body.get("Key") for body in drain(sqsa, other["ManifestQueueUrl"])]
    result["GroupWithQueue"] = dict(short(step), QueuedManifests=queued)
    expect(step["exit"] == 0, f"group --queue as the existing bucket's grouper exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"group --queue as the existing bucket's grouper: moto refused {step['refused']} request(s): {step['refused_requests']}")
    expect(any(item.startswith("--queue=") for item in group) and queued and all(k and k.endswith(".index") for k in queued),
           f"group --queue queued {queued}")

    # 4b. Before the worker: a stale DLQ beside a manifest and an orphaned upload at its archive key.
    command = cfn_stack.container_command(ecs, outputs["BundlerTaskDefinition"])
    target = manifest_keys[0] if manifest_keys else f"{manifests}/none.index"
    stale_dlq = f"{target}.dlq"
    s3a.put_object(Bucket=bucket, Key=stale_dlq, Body=b"bucket,key,version_id,size,reason,detail\n",
                   Metadata={"s3bundler-attempt": "a-killed-attempt"})
    orphan_key = archive_key(archives, SOURCE, target, command)
    orphan = s3a.create_multipart_upload(Bucket=bucket, Key=orphan_key)["UploadId"]
    s3a.upload_part(Bucket=bucket, Key=orphan_key, UploadId=orphan, PartNumber=1, Body=b"z" * 1024)
    # A second manifest whose lease another worker holds: the worker must leave it alone and
    # put its message off until the lease would expire (a delayed copy, sqs:SendMessage).
    busy = f"{manifests}/iam-busy.0.index"
    s3a.put_object(Bucket=bucket, Key=f"{busy}.lease", Body=json.dumps(
        {"owner": "another-host/pid-1/0000000000000001", "expires_at": int(time.time()) + 600}).encode())
    s3a.copy_object(Bucket=bucket, Key=busy, CopySource={"Bucket": bucket, "Key": target})
    time.sleep(1.5)  # the upload started strictly before the next attempt (seconds)

    # 4c. The queue worker, as the bundler: the task definition's command.
    step = run(args, users["bundler"], command + ["--wait-time=1", "--idle-timeout=3"])
    result["Bundle"] = short(step)
    expect(step["exit"] == 0, f"bundle -q as the bundler exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"bundle -q as the bundler: moto refused {step['refused']} request(s): {step['refused_requests']}")
    index_keys = [k for k in keys_under(s3a, bucket, archives + "/") if k.endswith(".index")]
    archived = set()
    for key in index_keys:
        text = s3a.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        archived.update(row["key"] for row in csv.DictReader(io.StringIO(text)))
    left = s3a.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    attributes = sqsa.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                        "ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    busy_put_off = "message put off: a fresh copy is visible in" in step["stderr"] and "being bundled by another worker" in step["stderr"]
    busy_untouched = not any(manifest_name(busy) in k for k in index_keys)
    # The busy manifest goes (its message, lease and manifest), so that verify sees one manifest.
    sqsa.purge_queue(QueueUrl=queue)
    s3a.delete_object(Bucket=bucket, Key=busy)
    s3a.delete_object(Bucket=bucket, Key=f"{busy}.lease")
    result["Bundle"].update(
        ObjectsArchived=len(archived & set(objects)),
        StaleDlqRemoved=stale_dlq not in keys_under(s3a, bucket, stale_dlq),
        OrphanedUploadAborted=not any(u["UploadId"] == orphan for u in left),
        AbortLogged="left by an earlier attempt" in step["stderr"],
        UploadsLeft=[u["Key"] for u in left],
        BusyManifestLeftAlone=busy_untouched,
        BusyMessagePutOff=busy_put_off,
        MessagesLeft=int(attributes["ApproximateNumberOfMessages"]),
        MessagesHidden=int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        MessagesDelayed=int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )
    b = result["Bundle"]
    expect(archived == set(objects), f"archived {len(archived & set(objects))} of {len(objects)} objects")
    expect(b["StaleDlqRemoved"], f"the stale DLQ {stale_dlq} is still there")
    expect(b["OrphanedUploadAborted"] and b["AbortLogged"], f"the orphaned upload at {orphan_key} was not aborted")
    expect(not left, f"incomplete uploads left: {b['UploadsLeft']}")
    expect(b["MessagesLeft"] == 0 and b["MessagesHidden"] == 0 and b["MessagesDelayed"] == 1,
           f"{b['MessagesLeft']} messages left on the queue, {b['MessagesHidden']} hidden and {b['MessagesDelayed']} delayed "
           "(expected 0, 0 and the busy one's fresh copy)")
    expect(busy_untouched and busy_put_off,
           "the manifest whose lease another worker holds was not left alone with its message put off (a delayed copy)")

    # 5. Calls outside the policies, with the users' own keys.
    s3 = {name: keys.client("s3", args) for name, keys in users.items()}
    first = next(iter(objects))
    result["Denied"] = {
        "bundler s3:DeleteObject source object": denied(lambda: s3["bundler"].delete_object(Bucket=SOURCE, Key=first)),
        "bundler s3:GetObject unrelated bucket": denied(lambda: s3["bundler"].get_object(Bucket=UNRELATED, Key="secret.txt")),
        "bundler s3:PutObject manifest": denied(lambda: s3["bundler"].put_object(Bucket=bucket, Key=f"{manifests}/forged.index", Body=b"x")),
        "bundler s3:DeleteObject archive": denied(lambda: s3["bundler"].delete_object(Bucket=bucket, Key=index_keys[0] if index_keys else "x")),
        "grouper sqs:ReceiveMessage manifest queue": denied(lambda: users["grouper"].client("sqs", args).receive_message(QueueUrl=queue)),
        "grouper s3:GetObject source object": denied(lambda: s3["grouper"].get_object(Bucket=SOURCE, Key=first)),
        "verifier s3:PutObject archive prefix": denied(lambda: s3["verifier"].put_object(Bucket=bucket, Key=f"{archives}/forged.tar", Body=b"x")),
        "redriver s3:PutObject manifest": denied(lambda: s3["redriver"].put_object(Bucket=bucket, Key=f"{manifests}/forged.index", Body=b"x")),
        "pruner s3:GetObject unrelated bucket": denied(lambda: s3["pruner"].get_object(Bucket=UNRELATED, Key="secret.txt")),
        "verifier s3:RestoreObject archive": denied(lambda: s3["verifier"].restore_object(
            Bucket=bucket, Key=index_keys[0] if index_keys else "x", RestoreRequest={"Days": 1})),
        "restorer s3:RestoreObject unrelated bucket": denied(lambda: s3["restorer"].restore_object(
            Bucket=UNRELATED, Key="secret.txt", RestoreRequest={"Days": 1})),
    }
    for call, code in result["Denied"].items():
        expect(code == "AccessDenied", f"{call}: expected AccessDenied, got {code}")

    # 4d. verify --deep, as the verifier.
    where = ["--manifests", f"s3://{bucket}/{manifests}/", "-b", bucket, "-p", archives]
    step = run(args, users["verifier"], ["verify", *where, "--deep"])
    result["Verify"] = short(step)
    expect(step["exit"] == 0, f"verify --deep as the verifier exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"verify --deep as the verifier: moto refused {step['refused']} request(s): {step['refused_requests']}")

    # 4e. prune --yes as the verifier: refused (exit 4, as the README documents), nothing deleted.
    step = run(args, users["verifier"], ["prune", *where, "--yes"])
    still = [k for k in objects if k in set(keys_under(s3a, SOURCE, "iam/"))]
    result["PruneAsVerifier"] = dict(short(step), ObjectsStillThere=len(still),
                                     RefusedLogged="ERROR could not delete" in step["stderr"])
    expect(step["exit"] == 4, f"prune --yes as the verifier exited {step['exit']}, expected 4: {step['stderr'][-3000:]}")
    # DeleteObjects answers 200 with a per-key AccessDenied (as S3 does): no 403 in moto's log.
    expect(result["PruneAsVerifier"]["RefusedLogged"] and "AccessDenied" in step["stderr"],
           f"prune --yes as the verifier did not report AccessDenied deletions: {step['stderr'][-3000:]}")
    expect(len(still) == len(objects), "prune as the verifier deleted source objects")

    # 4f. prune --yes as the pruner.
    step = run(args, users["pruner"], ["prune", *where, "--yes", "--json"])
    remaining = keys_under(s3a, SOURCE, "iam/")
    logs = [k for k in keys_under(s3a, bucket, manifests + "/") if k.endswith(".pruned")]
    pruned_rows = []
    for key in logs:
        text = s3a.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        pruned_rows.extend(csv.DictReader(io.StringIO(text)))
    result["Prune"] = dict(short(step), ObjectsLeft=len(remaining), PrunedLogs=logs, RowsLogged=len(pruned_rows))
    expect(step["exit"] == 0, f"prune --yes as the pruner exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"prune --yes as the pruner: moto refused {step['refused']} request(s): {step['refused_requests']}")
    expect(not remaining, f"prune left {len(remaining)} source objects")
    expect(len(pruned_rows) == len(objects), f".pruned logs list {len(pruned_rows)} of {len(objects)} objects")

    # 4g. redrive --yes -q as the redriver: a DLQ row (AccessDenied, as a source bucket policy
    # would give) beside the committed manifest becomes a redrive manifest, queued.
    s3a.put_object(Bucket=bucket, Key=stale_dlq, Body=(
        "bucket,key,version_id,size,last_modified,reason,detail\n"
        f"{SOURCE},{first},,{len(objects[first])},,AccessDenied,refused by the source bucket's policy\n").encode())
    step = run(args, users["redriver"], ["redrive", *where, "--yes", "-q", queue, "--json"])
    redriven = [k for k in keys_under(s3a, bucket, manifests + "/") if k.endswith(".redrive1.index")]
    # Its record in the catalog beside the manifests, and the compaction that takes it.
    catalogued = [k for k in keys_under(s3a, bucket, manifests + "/_catalog/") if ".redrive1." in k]
    expect(len(catalogued) == 1, f"redrive recorded {catalogued} in the catalog")
    # The manifest prefix's notification queues it too (an S3 event, no "Key").
    queued = [body["Key"] for body in drain(sqsa, queue) if "Key" in body]
    result["Redrive"] = dict(short(step), RedriveManifests=redriven, Queued=queued)
    expect(step["exit"] == 0, f"redrive --yes as the redriver exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"redrive as the redriver: moto refused {step['refused']} request(s): {step['refused_requests']}")
    expect(len(redriven) == 1 and queued == redriven, f"redrive wrote {redriven} and queued {queued}")

    # 4h. The way back, long after prune: the verifier locates a pruned object through the
    # catalog; its archive is moved to DEEP_ARCHIVE (as admin); the verifier cannot restore it,
    # the restorer (VerifyPolicy and RestorePolicy) can, and the verifier sees it in progress.
    recall = ["--manifests", f"s3://{bucket}/{manifests}/", "--archives", f"s3://{bucket}/{archives}/"]
    step = run(args, users["verifier"], ["locate", f"s3://{SOURCE}/{first}", *recall, "--json"])
    result["Locate"] = short(step)
    expect(step["exit"] == 0, f"locate as the verifier exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"locate as the verifier: moto refused {step['refused']} request(s): {step['refused_requests']}")
    located = json.loads(step["stdout"] or "{}").get("located") or [{}]
    holder = (located[0].get("archive") or "s3:///").removeprefix("s3://").partition("/")[2]
    if holder:
        s3a.copy_object(Bucket=bucket, Key=holder, CopySource={"Bucket": bucket, "Key": holder},
                        StorageClass="DEEP_ARCHIVE", MetadataDirective="COPY")
    restore = ["restore", f"s3://{SOURCE}/{first}", *recall, "--tier", "Bulk", "--days", "2", "--yes"]
    step = run(args, users["verifier"], restore)
    result["RestoreAsVerifier"] = short(step)
    expect(step["exit"] != 0 and step["refused"] > 0 and "s3:RestoreObject" in step["stderr"],
           f"restore --yes as the verifier exited {step['exit']} with {step['refused']} refused request(s), "
           f"not naming s3:RestoreObject: {step['stderr'][-2000:]}")
    step = run(args, users["restorer"], restore)
    result["Restore"] = short(step)
    expect(step["exit"] == 0, f"restore --yes as the restorer exited {step['exit']}: {step['stderr'][-3000:]}")
    expect(step["refused"] == 0, f"restore as the restorer: moto refused {step['refused']} request(s): {step['refused_requests']}")
    step = run(args, users["verifier"], ["restore", f"s3://{SOURCE}/{first}", *recall, "--status", "--json"])
    result["RestoreStatus"] = short(step)
    expect(step["exit"] == 0 and step["refused"] == 0,
           f"restore --status as the verifier exited {step['exit']}, {step['refused']} refused: {step['stderr'][-3000:]}")
    expect(holder and holder in step["stdout"], f"restore --status does not list {holder}: {step['stdout'][-2000:]}")

    # What moto does not authorize as AWS does, with moto's evaluator on AWS's resources.
    grouper_docs = [doc for _, doc in grouper_policies]
    partition = "aws"
    offline = {
        "grouper s3:GetObject staged manifest (CopyObject source)": allowed_offline(
            grouper_docs, "s3:GetObject", f"arn:{partition}:s3:::{bucket}/{manifests}/_staging/x/0.partial"),
        "pruner s3:DeleteObject each pruned object (PrunePolicy alone)": bool(pruned_rows) and all(
            allowed_offline([prune_doc], "s3:DeleteObject", f"arn:{partition}:s3:::{r['bucket']}/{r['key']}")
            for r in pruned_rows),
        "pruner s3:DeleteObjectVersion source object (PrunePolicy alone)": allowed_offline(
            [prune_doc], "s3:DeleteObjectVersion", f"arn:{partition}:s3:::{SOURCE}/{first}"),
        "verifier s3:GetObjectVersion source object": allowed_offline(
            [verify_doc], "s3:GetObjectVersion", f"arn:{partition}:s3:::{SOURCE}/{first}"),
        "bundler s3:GetObjectVersion source object": allowed_offline(
            [doc for _, doc in bundler_policies], "s3:GetObjectVersion", f"arn:{partition}:s3:::{SOURCE}/{first}"),
    }
    offline_denied = {
        "PrunePolicy s3:DeleteObject archive (must be denied)": allowed_offline(
            [prune_doc, verify_doc], "s3:DeleteObject", f"arn:{partition}:s3:::{bucket}/{index_keys[0] if index_keys else 'x'}"),
        "PrunePolicy s3:DeleteObject unrelated bucket (must be denied)": allowed_offline(
            [prune_doc], "s3:DeleteObject", f"arn:{partition}:s3:::{UNRELATED}/secret.txt"),
    }
    result["OfflineChecks"] = {**offline, **offline_denied}
    for what, ok in offline.items():
        expect(ok, f"offline: {what} is not allowed")
    for what, allowed in offline_denied.items():
        expect(not allowed, f"offline: {what} is allowed")

    result["Failures"] = failures
    result["Ok"] = not failures
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
