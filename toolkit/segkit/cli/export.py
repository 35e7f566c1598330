"""``segkit export``: a run's model as ONNX or TorchScript, with its preprocessing inside."""

from __future__ import annotations

import json
from pathlib import Path

import click

from segkit.cli import HintedChoice, plugin_option, registry_from_context
from segkit.runs.window import WindowSettings


@click.command("export")
@click.argument("run", metavar="RUN_DIR")
@click.option("--checkpoint", type=HintedChoice(["best", "last"]),
              help="Default: best (last for a 'segkit cv' directory).")
@click.option("--format", "fmt", type=HintedChoice(["onnx", "torchscript"]),
              help="Default: from --out (.onnx -> onnx, .pt/.ts -> torchscript).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--opset", type=int, help="ONNX opset version, 13 or newer (default 17); ONNX only.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@click.option("--quiet", is_flag=True, help="No lines on stderr as each phase (tracing, checking) starts.")
@plugin_option
def export_command(run: str, checkpoint: str | None, fmt: str | None, out: str, opset: int | None, overwrite: bool,
                   as_json: bool, quiet: bool) -> None:
    """Export RUN_DIR's model for deployment: dynamic batch, height and width; logits out.

    The file records segkit's preprocessing (image size, channels, scale, threshold),
    and the export is checked against PyTorch at two other input sizes. A 'segkit cv'
    directory exports its fold models as one ensemble (logits of their mean probability),
    with the TTA and post-processing its out-of-fold scores chose recorded in the metadata.
    """
    from segkit.errors import ConfigError
    from segkit.inference.export import DEFAULT_OPSET, MIN_OPSET, export_model, max_opset

    path = Path(out)
    if fmt is None:
        fmt = "torchscript" if path.suffix.lower() in (".pt", ".ts", ".pth", ".torchscript") else "onnx"
    # every option is checked before the model is loaded or traced
    if path.exists() and not overwrite:
        raise ConfigError(f"{out!r} already exists; pass --overwrite to replace it.")
    if opset is not None and fmt != "onnx":
        raise ConfigError(f"--opset is an ONNX setting and this export is {fmt}; drop --opset or use --format onnx.")
    opset = DEFAULT_OPSET if opset is None else opset
    if fmt == "onnx" and not MIN_OPSET <= opset <= max_opset():
        raise ConfigError(f"--opset {opset} is not supported: segkit's exports need {MIN_OPSET} or newer (dynamic "
                          f"shapes), and this torch writes at most {max_opset()}.")
    options = {"opset": opset} if fmt == "onnx" else {}
    note = (lambda _message: None) if quiet else (lambda message: click.echo(message, err=True))
    report = export_model(run, path, fmt, checkpoint, registry=registry_from_context(), note=note, **options)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    meta = report["metadata"]
    members = len(json.loads(meta["ensemble"])) if "ensemble" in meta else 0
    origin = f"the {members} fold models of {run}" if members else report["checkpoint"]
    click.echo(f"exported {meta['model']} from {origin} to {report['path']} ({fmt})")
    if members:
        click.echo(f"  the cross-validation recommends: tta {meta['recommended_tta']}, postprocess "
                   f"{meta['recommended_postprocess']} (segkit predict applies them to this file by default)")
    window = WindowSettings.from_metadata(meta, report["path"])
    if window is not None and window.dims == 3:
        click.echo(f"  input: patches (N, {meta['in_channels']}, {', '.join(map(str, window.patch_size))}) of a "
                   f"normalised volume; segkit slides {window.describe()}, threshold {meta['threshold']}")
    elif window is not None:
        click.echo(f"  input: (N, {meta['in_channels']}, H, W) float32 = pixels / {meta['scale']} at their own size; "
                   f"segkit slides {window.describe()}, threshold {meta['threshold']}")
    else:
        click.echo(f"  input: (N, {meta['in_channels']}, H, W) float32 = pixels / {meta['scale']}, "
                   f"image_size {meta['image_size']} (0: any), threshold {meta['threshold']}")
    if meta.get("mode", "binary") != "binary":
        click.echo(f"  output: {meta['output']}")
    if "max_abs_diff" in report:
        click.echo(f"  checked against PyTorch at two other input sizes: max |logit difference| "
                   f"{report['max_abs_diff']:.2e}")


COMMANDS = [export_command]
