"""What every stage and the report of the experiment share: its name, its studies and their settings."""

from __future__ import annotations

from benchmarks.wrn_robustness.schema import TriangleStudyConfig, WRNRobustnessConfig

NAME = "wrn_robustness"
STUDIES = ("wrn", "lenet")  # every study; a profile runs those in wrn_robustness.studies


def study_config(config: WRNRobustnessConfig, study: str) -> TriangleStudyConfig:
    return getattr(config, study)


def datasets(config) -> list[str]:
    """The datasets this experiment's stages read (checked by `losstopo validate`)."""
    return [study_config(config, s).dataset for s in config.studies]
