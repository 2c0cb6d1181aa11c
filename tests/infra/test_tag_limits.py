"""The `tags` cap (MAX_USER_TAGS) leaves room for every tag the synthesized templates carry besides the user's.

CDK adds tags of its own that count toward a resource's limit (only keys starting with "aws:" do not), and the
registry schemas of AWS::EC2::Subnet and AWS::S3::Bucket set no maxItems on Tags, so neither CDK's validation nor
cfn-lint would notice: CloudFormation's create would fail at deploy. Resources take at most 50 tags (botocore's ec2
model, CreateTags: "Each resource can have a maximum of 50 tags"; s3control, TagResource: "up to 50 ... resource
tags for each S3 resource"; the IAM, CloudWatch, SageMaker and OpenSearch Serverless schemas: Tags maxItems 50).
"""

from __future__ import annotations

from typing import Any

from stacks.shared.registry import resource_schema
from stacks.shared.settings import MAX_USER_TAGS

RESOURCE_TAG_LIMIT = 50


def tags_of(resource: dict[str, Any]) -> Any:
    """A resource's tag property as the template has it: the registry schema's tagging.tagProperty, Tags when it
    names none (custom resources, types without a schema)."""
    tagging = (resource_schema(resource["Type"]) or {}).get("tagging", {})
    name = str(tagging.get("tagProperty", "/properties/Tags")).removeprefix("/properties/")
    return (resource.get("Properties") or {}).get(name)


def tag_keys(resource: dict[str, Any]) -> list[str]:
    """The keys of a resource's tags, whichever form its type takes them in: a list of Key/Value objects (most
    types) or a JSON object of key to value (AWS::SSM::Parameter, AWS::Bedrock::KnowledgeBase, Prompt,
    PromptVersion)."""
    tags, name = tags_of(resource), resource["Type"]
    if tags is None:
        return []
    if isinstance(tags, dict):
        return [str(key) for key in tags]
    assert isinstance(tags, list), f"{name} tags are neither a list nor a map: {tags!r}"
    assert all(isinstance(tag, dict) and "Key" in tag for tag in tags), f"{name} tags: {tags!r}"
    return [str(tag["Key"]) for tag in tags]


def test_the_most_user_tags_still_fit_every_resource(each_stage: Any) -> None:
    """Each resource's tags that are not the variant's user tags (the kit's, CDK's), plus MAX_USER_TAGS user tags,
    stay within 50: no value `tags` accepts makes a resource refuse its tags at deploy."""
    user_keys = set(each_stage.config.tags)
    over, forms = [], set()
    for stack_id, template in each_stage.templates.items():
        for logical_id, resource in template.get("Resources", {}).items():
            keys = tag_keys(resource)
            if keys:
                forms.add(type(tags_of(resource)).__name__)
            others = [key for key in keys if not key.lower().startswith("aws:") and key not in user_keys]
            if len(others) + MAX_USER_TAGS > RESOURCE_TAG_LIMIT:
                over.append(f"{stack_id}/{logical_id} ({resource['Type']}): {len(others)} + {MAX_USER_TAGS} ({others})")
    assert not over, "more than 50 tags with the most user tags:\n" + "\n".join(over)
    # The guard reads both forms (every variant has list-tagged resources and Level 2's map-tagged knowledge base).
    assert forms == {"list", "dict"}


def test_tag_keys_reads_both_forms() -> None:
    assert tag_keys({"Type": "AWS::SSM::Parameter", "Properties": {"Tags": {"kit": "k", "aws:x": "y"}}}) == [
        "kit",
        "aws:x",
    ]
    assert tag_keys({"Type": "AWS::EC2::Subnet", "Properties": {"Tags": [{"Key": "Name", "Value": "n"}]}}) == ["Name"]
    assert tag_keys({"Type": "Custom::Thing", "Properties": {}}) == []
