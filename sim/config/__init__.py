"""Configuration: structured schemas, their registration with Hydra, and validation."""

from sim.config.schema import Config
from sim.config.store import CONF_DIR, SCENARIO_DIR, load_config, register_configs
from sim.config.validate import ConfigError, validate

__all__ = [
    "CONF_DIR",
    "SCENARIO_DIR",
    "Config",
    "ConfigError",
    "load_config",
    "register_configs",
    "validate",
]
