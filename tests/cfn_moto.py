#!/usr/bin/env python3
"""Creates the chord-dfs CloudFormation stack in a local moto server and
reports what it made, for tests/tests/cloudformation.rs to check.

Usage: cfn_moto.py ENDPOINT TEMPLATE STACK_NAME [EXISTING_INSTANCE_PROFILE]

ENDPOINT must be a loopback URL (http://127.0.0.1:PORT): the script talks to
moto only, with dummy credentials, and refuses anything else. It creates a VPC
and two subnets, creates the stack with fixed parameters (PARAMETERS below),
waits for CREATE_COMPLETE (bounded), and prints one JSON object on stdout:
the stack's status and resources, the roles and instance profiles that exist
before and after, the launch template's decoded user data, the group as the
Auto Scaling API describes it, the stack's outputs, and the template itself
as parsed (moto skips lifecycle hooks and scaling policies, so those are
checked there). It asserts nothing
itself: the Rust test does. Exit code non-zero with a one-line reason on
failure.
"""

import ast
import base64
import json
import os
import sys
import time
import urllib.parse

import boto3
from cfnlint.decode import cfn_yaml  # cfn-lint's YAML reader knows !Ref, !Sub, ...

REGION = "us-east-1"
# Stack creation in moto is synchronous in practice; the bound is for safety.
CREATE_TIMEOUT_S = 60
POLL_S = 0.5

# Parameters of the stack under test; the Rust test checks the group against
# the sizes here.
PARAMETERS = {
    "InstanceType": "t3.small",
    "MinSize": "2",
    "MaxSize": "5",
    "DesiredCapacity": "3",
    "TargetRequestRate": "40",
    "HeartbeatTimeout": "240",
    "NodeBinaryUrl": "s3://chord-dfs-artifacts/chord-node",
    "OperatorCidr": "203.0.113.7/32",
    "ClusterToken": "test-token-0123456789abcdef",
}


def fail(reason):
    print(f"FAIL: {reason}", file=sys.stderr)
    sys.exit(1)


def client(service, endpoint):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def main():
    if len(sys.argv) not in (4, 5):
        fail("usage: cfn_moto.py ENDPOINT TEMPLATE STACK_NAME [EXISTING_INSTANCE_PROFILE]")
    endpoint, template_path, stack_name = sys.argv[1:4]
    existing_profile = sys.argv[4] if len(sys.argv) == 5 else ""
    host = urllib.parse.urlparse(endpoint).hostname
    if host not in ("127.0.0.1", "localhost"):
        fail(f"endpoint {endpoint} is not loopback; this script talks to a local emulator only")
    # No stray profile or environment may redirect a call off the emulator.
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(var, None)
    with open(template_path, encoding="utf-8") as f:
        body = f.read()

    ec2 = client("ec2", endpoint)
    iam = client("iam", endpoint)
    cfn = client("cloudformation", endpoint)
    asg = client("autoscaling", endpoint)

    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
            "Subnet"
        ]["SubnetId"]
        for i, az in enumerate("ab")
    ]
    if existing_profile:
        # Stands in for AWS Academy's LabInstanceProfile, which exists before the stack.
        iam.create_instance_profile(InstanceProfileName=existing_profile)

    roles_before = sorted(r["RoleName"] for r in iam.list_roles()["Roles"])
    profiles_before = sorted(
        p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
    )

    params = dict(PARAMETERS, VpcId=vpc, Subnets=",".join(subnets))
    if existing_profile:
        params["ExistingInstanceProfile"] = existing_profile
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + CREATE_TIMEOUT_S
    while True:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            fail(f"stack still {stack['StackStatus']} after {CREATE_TIMEOUT_S}s")
        time.sleep(POLL_S)

    resources = cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
    # moto lists the resources it skips (scaling policies, role policies)
    # without ids; only the ones it made carry a logical and physical id.
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
        for r in resources
        if "LogicalResourceId" in r
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    template = None
    if "NodeLaunchTemplate" in physical:
        versions = ec2.describe_launch_template_versions(
            LaunchTemplateId=physical["NodeLaunchTemplate"]
        )["LaunchTemplateVersions"]
        data = versions[-1]["LaunchTemplateData"]
        template = {
            "id": physical["NodeLaunchTemplate"],
            "image_id": data.get("ImageId"),
            "instance_type": data.get("InstanceType"),
            "instance_profile": data.get("IamInstanceProfile", {}),
            "metadata_options": data.get("MetadataOptions", {}),
            "user_data": base64.b64decode(data.get("UserData", "")).decode("utf-8"),
        }

    group = None
    if "NodeGroup" in physical:
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[physical["NodeGroup"]])[
            "AutoScalingGroups"
        ]
        if groups:
            g = groups[0]
            group = {
                "name": g["AutoScalingGroupName"],
                "min": g["MinSize"],
                "max": g["MaxSize"],
                "desired": g["DesiredCapacity"],
                "launch_template_id": g.get("LaunchTemplate", {}).get("LaunchTemplateId"),
                "subnets": sorted(s for s in g.get("VPCZoneIdentifier", "").split(",") if s),
                "hooks": asg.describe_lifecycle_hooks(AutoScalingGroupName=g["AutoScalingGroupName"])[
                    "LifecycleHooks"
                ],
            }

    # The inline policies of the roles this stack made, as IAM stores them.
    role_policies = {}
    if "NodeRole" in physical:
        role = physical["NodeRole"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            if isinstance(doc, str):
                # moto keeps a role's inline policy from CloudFormation as a
                # Python literal rather than JSON.
                text = urllib.parse.unquote(doc)
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = ast.literal_eval(text)
            role_policies[name] = doc

    report = {
        "status": stack["StackStatus"],
        "status_reason": stack.get("StackStatusReason", ""),
        "resource_types": sorted({r["ResourceType"] for r in resources if "ResourceType" in r}),
        "logical_ids": sorted(physical),
        "subnets": sorted(subnets),
        "roles_before": roles_before,
        "roles_after": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "profiles_before": profiles_before,
        "profiles_after": sorted(
            p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
        ),
        "role_policies": role_policies,
        "launch_template": template,
        "group": group,
        "outputs": outputs,
        "parameters": PARAMETERS,
        # What moto skips (the hook, the scaling policy) is checked in the
        # template as written, in long form ({"Ref": ...}).
        "template": cfn_yaml.load(template_path),
    }
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one clear line for the Rust test's failure message
        fail(f"{type(e).__name__}: {e}")
