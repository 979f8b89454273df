"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import StateDep
from routers.route import Route
from routers.schemas import problem_responses

router = APIRouter(tags=["health"], route_class=Route)


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        **problem_responses(401),
    },
)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics (open unless BRIDGE_METRICS_REQUIRE_KEY is set)."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
