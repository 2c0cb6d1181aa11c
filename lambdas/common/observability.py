"""Observability shared by the kit's handlers: an optional X-Ray tracer and one-document EMF publishing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit


def make_tracer(logger: Logger, factory: Callable[[], Tracer] | None = None) -> Tracer | None:
    """A Powertools Tracer when tracing is on; None when it is off (or when aws-xray-sdk is absent).

    Powertools' Tracer decides: it is off outside Lambda, under SAM local and when POWERTOOLS_TRACE_DISABLED
    is true (https://docs.aws.amazon.com/powertools/python/latest/api/tracing/index.html). Callers cache the result (an
    ``lru_cache`` factory), so nothing is created at import time. ``factory`` builds the Tracer (default:
    Powertools' ``Tracer``).
    """
    try:
        tracer = (factory or Tracer)()
    except ImportError:
        logger.warning("aws-xray-sdk is not installed: tracing is off")
        return None
    return None if tracer.disabled else tracer


def annotate(tracer: Tracer | None, **annotations: str | bool) -> None:
    """X-Ray annotations on the current segment, when tracing is on."""
    if tracer is not None:
        for key, value in annotations.items():
            tracer.put_annotation(key=key, value=value)


def publish(
    metrics: Metrics | Any,
    values: Mapping[str, tuple[MetricUnit, float]],
    dimensions: Mapping[str, str],
    logger: Logger,
) -> None:
    """Write one EMF document (plus Powertools' ``service`` dimension); never fails the caller."""
    try:
        for name, value in dimensions.items():
            metrics.add_dimension(name=name, value=value)
        for name, (unit, number) in values.items():
            metrics.add_metric(name=name, unit=unit, value=number)
        metrics.flush_metrics()
    except Exception:
        logger.warning("Could not publish metrics", exc_info=True)
        metrics.clear_metrics()
