"""The synthetic survey as a source: what ``prepare`` writes into shards like any other.

Object ``i`` is ``render_object(i, seed, survey)``: deterministic in (seed, i), so any
worker renders any shard and a resumed run renders the same objects.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from astropt.data.sources.base import Source, SourceConfig
from astropt.data.synthetic.survey import GENERATOR_VERSION, SurveyConfig, render_object


class SyntheticSource(Source):
    """Random-access source of the objects of one synthetic survey."""

    def __init__(self, survey: SurveyConfig):
        super().__init__(SourceConfig(path=f"synthetic survey {survey.hash()}"))
        self.survey = survey

    def __len__(self) -> int:
        return self.survey.n

    def read(self, index: int) -> dict[str, Any]:
        return render_object(index, self.survey.seed, self.survey)

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "generator_version": GENERATOR_VERSION, **dataclasses.asdict(self.survey)}
