"""Cost models: predicted time of one iteration of a model on a device (torch-free).

- :class:`RooflineCostModel`: analytic, from FLOPs and bytes of the model and a device spec.
- :class:`MaxAffineCostModel`: fitted to measured step times (SLOs-Serve's max of affine
  pieces), with :func:`fit_max_affine`.
"""

from seallm.cost.batch import BatchShape, CostModel
from seallm.cost.device import DEVICES, DeviceSpec, measure_local_cpu
from seallm.cost.profiled import FitReport, MaxAffineCostModel, fit_max_affine
from seallm.cost.roofline import ModelShape, RooflineCostModel

__all__ = ["BatchShape", "CostModel", "DEVICES", "DeviceSpec", "FitReport", "MaxAffineCostModel", "ModelShape",
           "RooflineCostModel", "fit_max_affine", "measure_local_cpu"]
