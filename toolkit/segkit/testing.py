"""Conformance checks for plugin authors: the public name of :mod:`segkit.components.conformance`.

    from segkit.testing import check_model, check_loss, check_metric, check_dataset, check_components

Like ``numpy.testing``, this module stays at the top of the package so that plugin tests read
naturally; the checks themselves live with the rest of the component machinery.
"""

from segkit.components.conformance import (
    check_augmentation,
    check_component,
    check_components,
    check_dataset,
    check_loss,
    check_metric,
    check_model,
    check_volume_dataset,
    check_volume_format,
    check_volume_model,
    component_keys,
)

__all__ = ["check_augmentation", "check_component", "check_components", "check_dataset", "check_loss", "check_metric",
           "check_model", "check_volume_dataset", "check_volume_format", "check_volume_model", "component_keys"]
