"""The ``sam2trt`` command's help: examples after each command's options, and value columns that teach.

:class:`HelpCommand` and :class:`HelpGroup` are the typer command and group
classes of :mod:`sam2trt.cli`; :data:`EXAMPLES` holds each command's epilog (two
or three real command lines, checked against the app by ``tests/test_docs.py``).

Why the classes: typer 0.29's rich help prints every option's Python type in the
type column, flags included (``--quiet -q <bool>``), although a flag takes no
value (its plain-text help, ``TyperOption.get_help_record``, skips flags and
counters), and a repeated argument as ``<list[str]>``. Here a flag's and a
counter's column stays empty, and a repeated argument shows its element type
followed by ``...``. A repeated option names its value with ``metavar=`` (e.g.
``--box X,Y,W,H``) and says in its help what to repeat.
"""

from __future__ import annotations

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

class _FlagOption(TyperOption):
    """An option that takes no value (a flag or a counter): its help row shows no type."""

    def display_type_rich(self, ctx):
        return None


class _RepeatedArgument(TyperArgument):
    """A positional argument given one or more times: its help row shows the element type, then ``...``."""

    def display_type_rich(self, ctx):
        return f"<{self.type_descriptor.path_type if self.type_descriptor.is_path else 'str'}>..."


def _teaching_params(params: list) -> list:
    """``params`` with each flag, counter and repeated argument made to show its value as described in HelpCommand."""
    for param in params:
        if type(param) is TyperOption and (param.is_flag or param.count):
            param.__class__ = _FlagOption
        elif type(param) is TyperArgument and param.nargs != 1:
            param.__class__ = _RepeatedArgument
    return params


class HelpCommand(TyperCommand):
    """A typer command whose ``--help`` shows what each option takes (see the module's docstring).

    Its epilog is rich markup (typer's default mode), so the examples' single
    line breaks are kept.
    """

    def get_params(self, ctx):
        """The command's parameters and ``--help``, flags and repeated arguments shown as above."""
        return _teaching_params(super().get_params(ctx))


class HelpGroup(TyperGroup):
    """The ``sam2trt`` group, its ``--help`` flag shown as :class:`HelpCommand` shows flags."""

    def get_params(self, ctx):
        """The group's parameters and ``--help``."""
        return _teaching_params(super().get_params(ctx))


def examples(*commands: str, more: str = "") -> str:
    """The epilog of a command's ``--help``: an ``Examples`` heading, then each command indented.

    A command may hold newlines: its later lines are continuation lines (the
    previous line ends with `` \\``), indented by four spaces. Keep each line
    under 78 characters, the width of typer's help. The last line points to
    docs/cli.md (and, at column 0, keeps typer's ``cleandoc`` from removing the
    examples' indentation); ``more``, when given, is a paragraph before it.
    """
    return ("Examples:\n" + "\n".join("  " + command.replace("\n", "\n      ") for command in commands)
            + (f"\n\n{more}" if more else "") + "\n\nEvery command and option: docs/cli.md")



APP_EPILOG = examples(
    "sam2trt download sam2.1_hiera_t",
    "sam2trt export --config sam2.1_hiera_t \\\n--checkpoint sam2.1_hiera_tiny.pt --out engines/sam2.1_hiera_t",
    "sam2trt track video.mp4 --model engines/sam2.1_hiera_t \\\n--box 250,215,36,97 --out masked.mp4",
    more="sam2trt COMMAND --help: that command's options and examples.")

#: Each command's ``--help`` epilog, by command name.
EXAMPLES = {
    "export": examples(
        "sam2trt export --config sam2.1_hiera_t \\\n--checkpoint sam2.1_hiera_tiny.pt --out engines/sam2.1_hiera_t",
        "sam2trt export --config sam2_hiera_l \\\n--checkpoint sam2_hiera_large.pt --out engines/sam2_hiera_l --no-verify",
        "sam2trt export --config sam2.1_hiera_t --random-weights --seed 0 \\\n--out engines/tiny_random"),
    "download": examples(
        "sam2trt download sam2.1_hiera_t",
        "sam2trt download sam2.1_hiera_b+ --cache-dir /data/checkpoints"),
    "build-engines": examples(
        "sam2trt build-engines engines/sam2.1_hiera_t",
        "sam2trt build-engines engines/sam2.1_hiera_t --max-objects 4 --workspace 8",
        "sam2trt build-engines engines/sam2.1_hiera_t --precision fp32 \\\n--timing-cache timing.cache --force"),
    "convert-fp16": examples(
        "sam2trt convert-fp16 engines/sam2.1_hiera_t",
        "sam2trt convert-fp16 engines/sam2.1_hiera_t --force"),
    "doctor": examples(
        "sam2trt doctor",
        "sam2trt doctor --model engines/sam2.1_hiera_t"),
    "track": examples(
        "sam2trt track video.mp4 --model engines/sam2.1_hiera_t \\\n--box 250,215,36,97 --box 636,238,50,85 --out masked.mp4",
        "sam2trt track frames/ --model engines/sam2.1_hiera_t \\\n--point 268,260 --point 1@80:300,270,0 \\\n"
        "--masks-dir masks --json track.jsonl",
        "sam2trt track --manifest jobs.csv --model engines/sam2.1_hiera_t \\\n--json-summary --skip-existing --ray auto"),
    "bench": examples(
        "sam2trt bench --model engines/sam2.1_hiera_t --frames 20 --objects 4",
        "sam2trt bench --model engines/sam2.1_hiera_t --backend openvino \\\n--precision bf16 --json",
        "sam2trt bench --host-only --video video.mp4 \\\n--outputs out,json,masks_dir,coco --direction both"),
    "eval": examples(
        "sam2trt eval masks/ DAVIS/Annotations/480p/bike-packing",
        "sam2trt eval track.coco.json reference.coco.json --all-frames --json",
        "sam2trt eval results/ DAVIS/Annotations/480p --csv"),
    "verify": examples(
        "sam2trt verify engines/sam2.1_hiera_t video.mp4 --box 250,215,36,97 \\\n--backend onnxruntime --precision fp16",
        "sam2trt verify engines/sam2.1_hiera_t video.mp4 --box 250,215,36,97 \\\n--backend openvino --precision bf16 --frames 30 --min-jf 0.99"),
}
