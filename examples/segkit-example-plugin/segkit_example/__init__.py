"""An example segkit plugin: ``example_tinyunet`` (model), ``example_log_cosh_dice`` (loss),
``example_cutout3d`` (a 3D augmentation) and ``example_npz`` (a volume file format).

Importing this package imports nothing heavy; the components live in
:mod:`segkit_example.models`, :mod:`segkit_example.losses`, :mod:`segkit_example.cutout3d` and
:mod:`segkit_example.volume_npz` and are imported by segkit only when they are used.
"""

__version__ = "0.1.0"
