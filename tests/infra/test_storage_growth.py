"""Storage that would grow without bound while a sandbox idles or runs: every bucket aborts incomplete multipart
uploads (their parts are billed and listed nowhere,
https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpu-abort-incomplete-mpu-lifecycle-config.html), and every
versioned bucket expires noncurrent versions and then the delete markers they leave."""

from __future__ import annotations

from typing import Any

from tests.infra.helpers import resources


def _rules(bucket: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((bucket.get("Properties") or {}).get("LifecycleConfiguration") or {}).get("Rules") or [])


def test_every_bucket_ends_what_it_would_otherwise_keep_forever(each_stage: Any) -> None:
    versioned = 0
    for stack_id, template in each_stage.templates.items():
        for logical_id, bucket in resources(template, "AWS::S3::Bucket").items():
            rules = [rule for rule in _rules(bucket) if rule.get("Status") == "Enabled"]
            where = f"{stack_id}/{logical_id}"
            # A bucket whose every object expires (the access-log buckets, written by S3's log delivery) is bounded
            # as it is; any other aborts the multipart uploads left incomplete.
            expires = any("ExpirationInDays" in rule and not rule.get("Prefix") for rule in rules)
            assert expires or any("AbortIncompleteMultipartUpload" in rule for rule in rules), where
            for rule in rules:  # the registry schema refuses the marker rule beside a current-version expiry
                assert not ("ExpiredObjectDeleteMarker" in rule and "ExpirationInDays" in rule), where
            status = (bucket["Properties"].get("VersioningConfiguration") or {}).get("Status")
            if status == "Enabled":
                versioned += 1
                assert any("NoncurrentVersionExpiration" in rule for rule in rules), where
                # Before: a delete marker whose versions had expired stayed for good (each delete left one).
                assert any(rule.get("ExpiredObjectDeleteMarker") is True for rule in rules), where
    assert versioned >= 4  # the guard has work: the documents, data and artifacts buckets
