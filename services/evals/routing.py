"""Routing by score (opt-in, BRIDGE_ROUTE_BY_SCORE): a run that names no model goes to the loaded chat model
with the best `tool_score` (of those the API key may use); without a scored loaded model, to the default."""

from __future__ import annotations

from collections.abc import Mapping

from services.access import Access
from services.lmstudio import ModelCatalog


class ScoreRouting:
    """Picks a model by its newest eval's `tool_score` (`scores`: the eval service's, kept up to date)."""

    def __init__(self, catalog: ModelCatalog, scores: Mapping[str, float]) -> None:
        self.catalog = catalog
        self.scores = scores

    async def pick(self, access: Access | None) -> tuple[str, float] | None:
        """The best-scoring loaded chat model and its score, or None when no loaded model has a score."""
        if not self.scores:
            return None
        snap = await self.catalog.snapshot()
        aliases = self.catalog.aliases
        scored = [
            (self.scores[m.id], m.id)
            for m in snap.models
            if m.loaded
            and m.can_chat
            and m.id in self.scores
            and (access is None or access.model_allowed(m.id, aliases))
        ]
        if not scored:
            return None
        score, model = max(scored, key=lambda pair: (pair[0], pair[1]))
        return model, score
