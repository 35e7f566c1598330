# Sourced by the GPU session scripts on the device machine, from the repository root with .device/
# carried (../shared/tools/device/README.md): installs the carried wheels and segkit under /tmp,
# exports PYTHONPATH, and unpacks the LGG slices to /tmp/data. Needs PY; returns non-zero on failure.
$PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl || return 1
export PYTHONPATH=/tmp/site
$PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/seg . || return 1
export PYTHONPATH=/tmp/seg:/tmp/site
$PY .device/unpack.py .device/lgg.pkl /tmp/data > /dev/null || return 1
