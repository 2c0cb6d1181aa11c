"""The guardrail's safeguard tier (guardrail_tier): classic leaves the guardrail as it always was; standard sets both
tier configs, the region's guardrail profile and the ApplyGuardrail grants the profile needs; a region no profile
serves refuses the stack that builds the guardrail with one config error line.

Sources: https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-tiers.html (the tiers),
https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-cross-region-support.html (which profile serves which
source region, and where it routes), https://docs.aws.amazon.com/bedrock/latest/userguide/guardrail-profiles-permissions.html
(ApplyGuardrail on the profile in every destination region).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import aws_iam as iam

from app import build_app
from stacks.shared.facts import GUARDRAIL_PROFILES, STACK_IDS
from stacks.shared.guardrail import _GUARDRAIL_REVISION, KitGuardrail
from stacks.shared.registry import registry_regions
from stacks.shared.settings import guardrail_profile, guardrail_region_problems
from tests.conftest import cdk_json_context
from tests.infra.helpers import as_list, only, render, statements
from tests.infra.test_config import build
from tests.infra.test_shared_parts import feature_flags

US_DESTINATIONS = ("us-east-1", "us-east-2", "us-west-2")  # us.guardrail.v1:0 from us-east-1


def _synth(tmp_path: Path, region: str = "us-east-1", **overrides: Any) -> dict[str, Any]:
    """One stack in ``region`` with a KitGuardrail from the kit's settings and a role granted to apply it."""
    config = build(region=region, **overrides)
    app = cdk.App(context=feature_flags(), outdir=str(tmp_path))
    stack = cdk.Stack(app, "Guarded", env=cdk.Environment(region=region))
    guardrail = KitGuardrail(
        stack, "Guardrail", deployment=config.deployment, settings=config.guardrail, name="guardrail", applied_to="call"
    )
    role = iam.Role(stack, "Caller", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    guardrail.grant_apply(role)
    artifact = app.synth().get_stack_by_name("Guarded")
    errors = [str(m.entry.data) for m in artifact.messages if str(m.level).endswith("ERROR")]
    return {"template": artifact.template, "errors": errors, "config": config}


def _apply_statements(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for _, s in statements(template) if "bedrock:ApplyGuardrail" in as_list(s["Action"])}


def test_standard_sets_both_tiers_the_regions_profile_and_grants_it_in_every_destination(tmp_path: Path) -> None:
    # Given guardrail_tier standard in us-east-1, with the denied topic on (cdk.json's default)
    found = _synth(tmp_path, guardrail_tier="standard")
    guardrail_id, guardrail = only(found["template"], "AWS::Bedrock::Guardrail")
    props = guardrail["Properties"]
    # Then the content filters (prompt attacks included) and the denied topic run on the Standard tier
    assert props["ContentPolicyConfig"]["ContentFiltersTierConfig"] == {"TierName": "STANDARD"}
    assert props["TopicPolicyConfig"]["TopicsTierConfig"] == {"TierName": "STANDARD"}
    # And through the US guardrail profile of the source region
    profile = "arn:aws:bedrock:{}:${{AWS::AccountId}}:guardrail-profile/us.guardrail.v1:0"
    assert render(props["CrossRegionConfig"]["GuardrailProfileArn"]) == profile.format("us-east-1")
    # And the caller may apply the guardrail, and the profile in the source and every destination region
    grants = _apply_statements(found["template"])
    assert grants["ApplyGuardrail"]["Resource"] == {"Fn::GetAtt": [guardrail_id, "GuardrailArn"]}
    assert sorted(render(r) for r in grants["ApplyGuardrailProfile"]["Resource"]) == sorted(
        profile.format(region) for region in US_DESTINATIONS
    )
    assert grants["ApplyGuardrailProfile"]["Action"] == "bedrock:ApplyGuardrail"
    assert found["errors"] == []


def test_standard_without_the_denied_topic_sets_no_topic_policy(tmp_path: Path) -> None:
    props = only(
        _synth(tmp_path, guardrail_tier="standard", guardrail_deny_investment_advice=False)["template"],
        "AWS::Bedrock::Guardrail",
    )[1]["Properties"]
    assert "TopicPolicyConfig" not in props
    assert props["ContentPolicyConfig"]["ContentFiltersTierConfig"] == {"TierName": "STANDARD"}


def test_classic_sets_no_tier_no_profile_and_no_profile_grant(tmp_path: Path) -> None:
    found = _synth(tmp_path)
    assert found["config"].guardrail.tier == "classic"  # cdk.json's default
    props = only(found["template"], "AWS::Bedrock::Guardrail")[1]["Properties"]
    assert "ContentFiltersTierConfig" not in props["ContentPolicyConfig"]
    assert "TopicsTierConfig" not in props["TopicPolicyConfig"]
    assert "CrossRegionConfig" not in props
    assert list(_apply_statements(found["template"])) == ["ApplyGuardrail"]


def test_classic_keeps_the_version_published_before_the_tier_was_a_setting(tmp_path: Path) -> None:
    # The digest of the settings without the tier, as the version's Description was written before: an upgrade on
    # the default tier publishes no new version.
    found = _synth(tmp_path)
    before = found["config"].guardrail.model_dump(exclude={"tier"})
    digest = hashlib.sha256(json.dumps([before, _GUARDRAIL_REVISION], sort_keys=True).encode()).hexdigest()[:16]
    version = only(found["template"], "AWS::Bedrock::GuardrailVersion")[1]
    assert version["Properties"]["Description"] == f"settings {digest}"


def test_a_tier_change_publishes_a_new_version(tmp_path: Path) -> None:
    classic = _synth(tmp_path / "classic")["template"]
    standard = _synth(tmp_path / "standard", guardrail_tier="standard")["template"]
    descriptions = [
        only(template, "AWS::Bedrock::GuardrailVersion")[1]["Properties"]["Description"]
        for template in (classic, standard)
    ]
    assert descriptions[0] != descriptions[1]


def test_another_profile_for_the_region_publishes_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A version answers its own crossRegionDetails (botocore's GetGuardrail takes guardrailVersion), and the role's
    # grant follows the profile the kit's table picks: a table that serves the region through another profile (as
    # ap-southeast-2 went from apac to au) must publish a version that uses it.
    def version_and_grant(out: Path) -> tuple[str, list[str]]:
        template = _synth(out, region="ap-southeast-2", guardrail_tier="standard")["template"]
        grant = [render(r) for r in as_list(_apply_statements(template)["ApplyGuardrailProfile"]["Resource"])]
        return only(template, "AWS::Bedrock::GuardrailVersion")[1]["Properties"]["Description"], grant

    get = boto3.client("bedrock", region_name="us-east-1").meta.service_model.operation_model("GetGuardrail")
    assert "guardrailVersion" in get.input_shape.members and "crossRegionDetails" in get.output_shape.members
    with_au, au_grant = version_and_grant(tmp_path / "au")
    monkeypatch.setattr(
        "stacks.shared.settings.GUARDRAIL_PROFILES",
        {k: v for k, v in GUARDRAIL_PROFILES.items() if k != "au.guardrail.v1:0"},
    )
    with_apac, apac_grant = version_and_grant(tmp_path / "apac")
    assert all("au.guardrail" in arn for arn in au_grant) and all("apac.guardrail" in arn for arn in apac_grant)
    assert with_au != with_apac


def test_a_region_no_guardrail_profile_serves_refuses_the_stack_with_one_line(tmp_path: Path) -> None:
    # Given sa-east-1, a region of the kit that no guardrail profile serves as a source
    region = "sa-east-1"
    assert region in registry_regions() and guardrail_profile(region) is None
    # The configuration itself builds: only the stacks that build the guardrail are refused (stacks/shared/regions.py)
    found = _synth(tmp_path, region=region, guardrail_tier="standard")
    served = sorted({source for sources in GUARDRAIL_PROFILES.values() for source in sources})
    assert found["errors"] == [
        f"config error: guardrail_tier = 'standard' is not allowed; expected classic in region {region}, which no "
        "Bedrock guardrail profile serves; the standard tier needs one, offered in " + ", ".join(served)
    ]
    # And nothing of the Standard tier is built there
    props = only(found["template"], "AWS::Bedrock::Guardrail")[1]["Properties"]
    assert "CrossRegionConfig" not in props and "ContentFiltersTierConfig" not in props["ContentPolicyConfig"]
    # While classic is allowed in any region
    assert guardrail_region_problems(build(region=region).guardrail, region) == []


@pytest.mark.parametrize(
    ("region", "profile", "destinations"),
    [
        ("eu-west-1", "eu.guardrail.v1:0", 6),
        ("eu-west-2", "uk.guardrail.v1:0", 1),  # the UK profile, not the EU one
        ("ap-southeast-2", "au.guardrail.v1:0", 1),  # served by au and apac: the narrower one
        ("ap-northeast-1", "apac.guardrail.v1:0", 6),
        ("il-central-1", "eu.guardrail.v1:0", 7),
    ],
)
def test_the_guardrail_profile_is_the_regions_own(region: str, profile: str, destinations: int) -> None:
    found = guardrail_profile(region)
    assert found is not None and found[0] == profile
    assert region in found[1] and len(found[1]) == destinations


def test_every_source_region_of_the_table_is_a_kit_region_it_routes_within() -> None:
    kit = set(registry_regions())
    for profile, sources in GUARDRAIL_PROFILES.items():
        assert profile.endswith(".guardrail.v1:0")
        for source, destinations in sources.items():
            assert source in kit and source in destinations, (profile, source)
            assert set(destinations) <= kit and len(set(destinations)) == len(destinations), (profile, source)


def test_levels_1_and_2_apply_the_standard_tier_through_their_functions_roles(tmp_path: Path) -> None:
    # Given the kit's app with guardrail_tier standard, When Levels 1 and 2 are synthesized
    context = {**cdk_json_context(), "guardrail_tier": "standard"}
    app, _ = build_app(
        context, outdir=str(tmp_path), nag=False, schema_validation=False, only=[STACK_IDS["1"], STACK_IDS["2"]]
    )
    assembly = app.synth()
    for stack_id in (STACK_IDS["1"], STACK_IDS["2"]):
        template = assembly.get_stack_by_name(f"{stack_id}-sandbox").template
        # Then each guardrail runs on the Standard tier and the role that applies it may use the profile
        props = only(template, "AWS::Bedrock::Guardrail")[1]["Properties"]
        assert props["ContentPolicyConfig"]["ContentFiltersTierConfig"] == {"TierName": "STANDARD"}
        assert "us.guardrail.v1:0" in render(props["CrossRegionConfig"]["GuardrailProfileArn"])
        assert "ApplyGuardrailProfile" in _apply_statements(template), stack_id


# The version's Description digests the settings and _GUARDRAIL_REVISION, not the guardrail as rendered: a change to its
# fixed parts (the blocked messages, the topic's definition and examples, the description) publishes no new version,
# and the deployed APIs keep applying the old text, unless the revision is bumped. The guardrail as rendered for each
# (revision, tier, settings digest) it was checked at; a change of the settings (cdk.json) is a new key, and so a new
# version by itself: record it under the same revision.
RENDERED = {
    (2, "classic", "f627c3f6104e3dff"): "8294582e42f0de94",
    (2, "standard", "22c08b25433a5fcd"): "1d6200d68cec34d7",
}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("tier", ["classic", "standard"])
def test_a_change_to_the_guardrail_its_settings_do_not_describe_comes_with_a_new_revision(
    tmp_path: Path, tier: str
) -> None:
    found = _synth(tmp_path, guardrail_tier=tier)
    props = {
        k: v for k, v in only(found["template"], "AWS::Bedrock::Guardrail")[1]["Properties"].items() if k != "Tags"
    }
    key = (_GUARDRAIL_REVISION, tier, _digest(found["config"].guardrail.model_dump()))
    assert RENDERED.get(key) == _digest(props), (
        f"the guardrail as rendered for {key} is {_digest(props)}. If only the settings changed, record it under this "
        "key; if the kit's fixed parts of the guardrail changed, bump _GUARDRAIL_REVISION (stacks/shared/guardrail.py) "
        "so that a new version is published, and record it under the new revision"
    )
