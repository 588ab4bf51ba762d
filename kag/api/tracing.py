"""OpenTelemetry tracing: one span per request (FastAPI instrumentation) and one per pipeline stage.

Off unless KAG_API_OTLP_ENDPOINT is set: then spans go to that OTLP/HTTP endpoint in batches.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

STAGES = ("retrieve", "rerank", "generate", "verify", "audit")


def tracer_provider_from(endpoint: str | None, service_name: str) -> Any:
    """A TracerProvider exporting to `endpoint`, or None when tracing is off."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def instrument(app: Any, provider: Any) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="healthz,readyz,metrics")


def record_stages(provider: Any, timings: Mapping[str, float], attributes: Mapping[str, Any] | None = None) -> None:
    """Child spans of the current request span for each pipeline stage, placed by their measured durations.

    The pipeline runs its stages one after another and reports how long each took; the spans are laid
    end to end so that the last one ends now.
    """
    if provider is None:
        return
    tracer = provider.get_tracer("kag.pipeline")
    end = time.time_ns()
    total = timings.get("total") or sum(timings.get(s, 0.0) for s in STAGES)
    start = end - int(total * 1e9)
    cursor = start
    with tracer.start_as_current_span("kag.answer", start_time=start, end_on_exit=False) as parent:
        for key, value in (attributes or {}).items():
            parent.set_attribute(key, value)
        for stage in STAGES:
            if stage not in timings:
                continue
            length = int(timings[stage] * 1e9)
            span = tracer.start_span(f"kag.{stage}", start_time=cursor)
            span.end(end_time=cursor + length)
            cursor += length
        parent.end(end_time=end)
