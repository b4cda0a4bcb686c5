"""Architecture code of the modelled kernels (arch/)."""
