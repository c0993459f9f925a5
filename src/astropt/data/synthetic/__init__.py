"""The embedded default: a synthetic multi-band, multi-modal galaxy survey with known truth.

A source (:class:`~astropt.data.synthetic.source.SyntheticSource`) that the one shard
writer, :func:`astropt.data.prepare.prepare`, turns into a prepared folder
(:func:`synthesize`). Modules: ``templates`` (SEDs and filters shipped with GalSim),
``params`` (the drawn physical parameters), ``render`` and ``rare`` (GalSim rendering of
normal and rare objects), ``survey`` (one object, the survey settings and ``synthesize``),
``source`` and ``gallery`` (the PNG grid of examples of :func:`preview`).
"""

from astropt.data.synthetic.survey import (
    GENERATOR_VERSION,
    SurveyConfig,
    array_specs,
    check_model_compat,
    half_light_radius,
    preview,
    render_object,
    synthesize,
)

__all__ = [
    "GENERATOR_VERSION",
    "SurveyConfig",
    "array_specs",
    "check_model_compat",
    "half_light_radius",
    "preview",
    "render_object",
    "synthesize",
]
