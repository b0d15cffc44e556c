"""Run configuration: the schema (:mod:`.schema`) and YAML / override loading (:mod:`.loading`)."""

from dreampropeller.config.loading import ConfigError, build, merge_config, resolve_config_path, to_dict
from dreampropeller.config.schema import TextTo3DConfig

__all__ = ["ConfigError", "TextTo3DConfig", "build", "merge_config", "resolve_config_path", "to_dict"]
