"""An example segkit plugin: ``example_tinyunet`` (model) and ``example_log_cosh_dice`` (loss).

Importing this package imports nothing heavy; the components live in
:mod:`segkit_example.models` and :mod:`segkit_example.losses` and are imported by
segkit only when they are used.
"""

__version__ = "0.1.0"
