"""Site configuration: models, the TOML loader and the generated reference."""

from edge_runtime.config.loader import LoadedConfig, load_config, parse_config
from edge_runtime.config.models import (
    BrokerConfig,
    IngestConfig,
    OpsConfig,
    SiteConfig,
    TLSConfig,
    UplinkConfig,
)

__all__ = [
    "BrokerConfig",
    "IngestConfig",
    "LoadedConfig",
    "OpsConfig",
    "SiteConfig",
    "TLSConfig",
    "UplinkConfig",
    "load_config",
    "parse_config",
]
