"""The IAM policies in deploy/ against moto's IAM simulation (in-process, `mock_aws` with IAM
authentication enabled: moto's counterpart of a moto_server started with
INITIAL_NO_AUTH_ACTION_COUNT), for every AWS operation pitstop's SDK wrappers call
(controller/src/aws/sdk/).

What moto evaluates, and so what this shows:
- ELBv2, the Action element only: every ELBv2 operation pitstop makes is granted by both
  policies, and one they do not list (DeleteTargetGroup) is refused;
- ELBv2 statements scoped by Resource: moto authorizes ELBv2 requests against the resource
  "*" (only a few services tell it the real ARN), so no statement that names an ARN ever
  matches. Under moto, Register/DeregisterTargets are therefore refused by both policies as
  written; the action check runs on a copy whose Resource elements are "*".
- Auto Scaling: moto authorizes the reads and the writes of spec.autoScaling by action; the
  writes' statements name group ARNs, so (as for ELBv2) their action check runs on a copy
  whose Resource elements are "*".
- SSM: moto does not authorize SSM requests at all (a user with no SSM permission may still
  send commands and create documents there): nothing about the SSM statements can be checked
  with it. The SSM action names are checked statically in test_chart.py.

What moto cannot evaluate, and is checked nowhere here: the Resource ARNs themselves, and the
tag conditions of iam-policy-tagged.json (`aws:ResourceTag/pitstop.dev/managed` on target
groups, `ssm:resourceTag/pitstop.dev/managed` on instances and documents). moto ignores any
condition operator but StringEquals, and has no resource-tag values to compare with, so a
condition always passes. Those keys are the ones AWS documents for these actions (Service
Authorization Reference, Elastic Load Balancing V2 and Systems Manager); only IAM's policy
simulator or a real account can prove them.

Run: .venv/bin/python -m pytest -q charts/tests   (or `make test-chart`)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import disable_iam_authentication, enable_iam_authentication

ROOT = Path(__file__).resolve().parents[2]
POLICIES = {
    "iam-policy.json": ROOT / "deploy" / "iam-policy.json",
    "iam-policy-tagged.json": ROOT / "deploy" / "iam-policy-tagged.json",
}
REGION = "eu-west-1"
ARN = f"arn:aws:elasticloadbalancing:{REGION}:{DEFAULT_ACCOUNT_ID}:targetgroup/web/0123456789abcdef"
INSTANCE = "i-0123456789abcdef0"
TARGETS = [{"Id": INSTANCE, "Port": 80}]
COMMAND = "00000000-0000-4000-8000-000000000000"

# Every operation pitstop calls, with harmless arguments: (IAM action, call).
Call = Callable[[Any, Any, Any], Any]
PITSTOP_CALLS: dict[str, Call] = {
    "elasticloadbalancing:DescribeTargetHealth": lambda elb, ssm, ec2: elb.describe_target_health(TargetGroupArn=ARN),
    "elasticloadbalancing:DescribeTargetGroupAttributes":
        lambda elb, ssm, ec2: elb.describe_target_group_attributes(TargetGroupArn=ARN),
    "elasticloadbalancing:DescribeTargetGroups": lambda elb, ssm, ec2: elb.describe_target_groups(TargetGroupArns=[ARN]),
    "elasticloadbalancing:DescribeTags": lambda elb, ssm, ec2: elb.describe_tags(ResourceArns=[ARN]),
    "elasticloadbalancing:RegisterTargets": lambda elb, ssm, ec2: elb.register_targets(TargetGroupArn=ARN, Targets=TARGETS),
    "elasticloadbalancing:DeregisterTargets":
        lambda elb, ssm, ec2: elb.deregister_targets(TargetGroupArn=ARN, Targets=TARGETS),
    "ssm:SendCommand": lambda elb, ssm, ec2: ssm.send_command(
        InstanceIds=[INSTANCE], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}),
    "ssm:GetCommandInvocation": lambda elb, ssm, ec2: ssm.get_command_invocation(CommandId=COMMAND, InstanceId=INSTANCE),
    "ssm:ListCommands": lambda elb, ssm, ec2: ssm.list_commands(),
    "ssm:ListCommandInvocations": lambda elb, ssm, ec2: ssm.list_command_invocations(),
    "ssm:CancelCommand": lambda elb, ssm, ec2: ssm.cancel_command(CommandId=COMMAND),
    "ssm:DescribeInstanceInformation": lambda elb, ssm, ec2: ssm.describe_instance_information(),
    "ssm:DescribeDocument": lambda elb, ssm, ec2: ssm.describe_document(Name="AWS-RunShellScript"),
    "ec2:DescribeInstances": lambda elb, ssm, ec2: ec2.describe_instances(),
}
# The Auto Scaling reads (selector.autoScalingGroupName), called with an Auto Scaling client.
AUTOSCALING_CALLS: dict[str, Callable[[Any], Any]] = {
    "autoscaling:DescribeAutoScalingGroups":
        lambda asg: asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"]),
    "autoscaling:DescribeAutoScalingInstances": lambda asg: asg.describe_auto_scaling_instances(InstanceIds=[INSTANCE]),
}


def _dispatched(call: Callable[[], Any]) -> None:
    """Runs `call`; moto answers some writes on a missing group with a KeyError from its backend,
    which it reaches only after authorizing the request: that counts as past IAM."""
    try:
        call()
    except KeyError:
        pass


# The Auto Scaling writes of spec.autoScaling (Standby, SuspendProcesses), on a group that does not exist
# (an error other than a refusal means the call got past IAM).
AUTOSCALING_WRITES: dict[str, Callable[[Any], Any]] = {
    "autoscaling:EnterStandby": lambda asg: _dispatched(lambda: asg.enter_standby(
        AutoScalingGroupName="web-asg", InstanceIds=[INSTANCE], ShouldDecrementDesiredCapacity=True)),
    "autoscaling:ExitStandby": lambda asg: _dispatched(lambda: asg.exit_standby(
        AutoScalingGroupName="web-asg", InstanceIds=[INSTANCE])),
    "autoscaling:UpdateAutoScalingGroup": lambda asg: _dispatched(lambda: asg.update_auto_scaling_group(
        AutoScalingGroupName="web-asg", MinSize=2)),
    "autoscaling:SuspendProcesses": lambda asg: _dispatched(lambda: asg.suspend_processes(
        AutoScalingGroupName="web-asg", ScalingProcesses=["HealthCheck"])),
    "autoscaling:ResumeProcesses": lambda asg: _dispatched(lambda: asg.resume_processes(
        AutoScalingGroupName="web-asg", ScalingProcesses=["HealthCheck"])),
}
# Operations pitstop never needs: the policies must not grant them.
FOREIGN_CALLS: dict[str, Call] = {
    "elasticloadbalancing:DeleteTargetGroup": lambda elb, ssm, ec2: elb.delete_target_group(TargetGroupArn=ARN),
    "ssm:CreateDocument": lambda elb, ssm, ec2: ssm.create_document(
        Name="x", Content='{"schemaVersion":"2.2","mainSteps":[]}', DocumentType="Command"),
}
SCOPED = {"elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"}


def _elbv2(calls: dict[str, Call]) -> dict[str, Call]:
    return {a: c for a, c in calls.items() if a.startswith("elasticloadbalancing:")}


def _ssm(calls: dict[str, Call]) -> dict[str, Call]:
    return {a: c for a, c in calls.items() if a.startswith("ssm:")}


def _policy(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text().replace("ACCOUNT_ID", DEFAULT_ACCOUNT_ID))


def _unscoped(policy: dict[str, Any]) -> dict[str, Any]:
    relaxed = copy.deepcopy(policy)
    for statement in relaxed["Statement"]:
        statement["Resource"] = "*"
    return relaxed


def _allowed(policy: dict[str, Any], calls: dict[str, Call]) -> dict[str, bool]:
    """Which calls moto lets through for a user holding only `policy`."""
    with mock_aws():
        with disable_iam_authentication():
            iam = boto3.client("iam", region_name=REGION)
            iam.create_user(UserName="pitstop")
            iam.put_user_policy(UserName="pitstop", PolicyName="pitstop", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="pitstop")["AccessKey"]
        session = boto3.Session(aws_access_key_id=key["AccessKeyId"],
                                aws_secret_access_key=key["SecretAccessKey"], region_name=REGION)
        elb, ssm, ec2 = session.client("elbv2"), session.client("ssm"), session.client("ec2")
        asg = session.client("autoscaling")
        verdicts = {}
        with enable_iam_authentication():
            for action, call in calls.items():
                try:
                    if action.startswith("autoscaling:"):
                        call(asg)
                    else:
                        call(elb, ssm, ec2)
                    verdicts[action] = True
                except ClientError as error:
                    code = error.response.get("Error", {}).get("Code", "")
                    # Anything but a refusal (e.g. TargetGroupNotFound) got past IAM.
                    verdicts[action] = code not in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
                except NotImplementedError:
                    # moto authorizes before it dispatches: an operation it does not
                    # emulate (ListCommandInvocations) got past IAM.
                    verdicts[action] = True
        return verdicts


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_elbv2_call_pitstop_makes_is_granted_and_nothing_else(name):
    policy = _unscoped(_policy(POLICIES[name]))
    granted = _allowed(policy, _elbv2(PITSTOP_CALLS))
    assert granted == {action: True for action in _elbv2(PITSTOP_CALLS)}, granted
    foreign = _allowed(policy, _elbv2(FOREIGN_CALLS))
    assert foreign == {action: False for action in _elbv2(FOREIGN_CALLS)}, foreign


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_ec2_read_of_tag_selectors_is_granted_and_refused_without_it(name):
    ec2_calls = {a: c for a, c in PITSTOP_CALLS.items() if a.startswith("ec2:")}
    assert ec2_calls, "pitstop reads EC2 (selector.tags)"
    assert _allowed(_policy(POLICIES[name]), ec2_calls) == {a: True for a in ec2_calls}
    # Not vacuous: moto authorizes EC2, and refuses it to a policy without the action.
    refused = _allowed({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticloadbalancing:DescribeTargetHealth", "Resource": "*"}]}, ec2_calls)
    assert refused == {a: False for a in ec2_calls}, refused


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_auto_scaling_reads_of_group_selectors_are_granted_and_refused_without_them(name):
    assert _allowed(_policy(POLICIES[name]), AUTOSCALING_CALLS) == {a: True for a in AUTOSCALING_CALLS}
    # Not vacuous: moto authorizes Auto Scaling, and refuses it to a policy without the actions.
    refused = _allowed({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}]}, AUTOSCALING_CALLS)
    assert refused == {a: False for a in AUTOSCALING_CALLS}, refused


def test_moto_refuses_an_elbv2_call_no_policy_grants():
    # The check above is not vacuous: with IAM authentication on, a user without the action
    # is refused.
    granted = _allowed({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticloadbalancing:DescribeTargetHealth", "Resource": "*"}]},
        _elbv2(PITSTOP_CALLS))
    assert [a for a, v in granted.items() if v] == ["elasticloadbalancing:DescribeTargetHealth"], granted


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_moto_matches_no_scoped_elbv2_statement(name):
    # moto: ELBv2 requests are authorized against the resource "*", so the statements that
    # name ARNs (and, in the tagged policy, carry the tag conditions) never apply there.
    granted = _allowed(_policy(POLICIES[name]), _elbv2(PITSTOP_CALLS))
    assert {a for a, ok in granted.items() if not ok} == SCOPED, granted


def test_moto_does_not_authorize_ssm():
    # moto: a user with no SSM permission at all gets every SSM call through, so the SSM
    # statements cannot be checked against it. Should a moto release start to authorize SSM,
    # this fails, and the checks above can be extended to SSM.
    nothing = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticloadbalancing:DescribeTargetHealth", "Resource": "*"}]}
    granted = _allowed(nothing, _ssm({**PITSTOP_CALLS, **FOREIGN_CALLS}))
    assert all(granted.values()), granted


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_auto_scaling_writes_of_the_modes_are_granted_and_refused_without_them(name):
    # On a copy whose Resource elements are "*": what moto checks is the action names (the
    # group ARN and the tag condition are AWS's documented ones, checked statically in test_chart.py).
    assert _allowed(_unscoped(_policy(POLICIES[name])), AUTOSCALING_WRITES) == {a: True for a in AUTOSCALING_WRITES}
    refused = _allowed({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "autoscaling:DescribeAutoScalingGroups", "Resource": "*"}]}, AUTOSCALING_WRITES)
    assert refused == {a: False for a in AUTOSCALING_WRITES}, refused
