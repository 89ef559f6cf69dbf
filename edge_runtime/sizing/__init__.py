"""Sizing a site: ``edge-runtime size PROFILE.toml`` answers cores, memory, spool disk and
uplink bandwidth for a site profile from per-unit costs that ``edge-runtime size
--calibrate`` measures on the machine by short stress tests of the real runtime.

* :mod:`~edge_runtime.sizing.profile`: the profile (sensors, cameras, outage);
* :mod:`~edge_runtime.sizing.calibration`: the stored per-unit costs;
* :mod:`~edge_runtime.sizing.model`: the arithmetic (no measurement);
* :mod:`~edge_runtime.sizing.stress` and :mod:`~edge_runtime.sizing.load`: a profile run for
  real, with its load generators;
* :mod:`~edge_runtime.sizing.calibrate`: the stress tests behind a calibration.
"""

from edge_runtime.sizing.calibration import Calibration, CameraCost, default_calibration_path
from edge_runtime.sizing.model import Line, SizingAnswer, camera_cost, size_site
from edge_runtime.sizing.profile import CameraGroup, SensorGroup, SiteProfile, load_profile

__all__ = [
    "Calibration",
    "CameraCost",
    "CameraGroup",
    "Line",
    "SensorGroup",
    "SiteProfile",
    "SizingAnswer",
    "camera_cost",
    "default_calibration_path",
    "load_profile",
    "size_site",
]
