"""`python -m tools.fuzz_atheris TARGET [libFuzzer flags] [CORPUS_DIR...]`: coverage-guided fuzzing of one
input target (tools.fuzz_inputs.TARGETS) with atheris, libFuzzer for Python.

atheris (pip install -e '.[atheris]': a binary wheel for CPython 3.11 on x86-64 Linux) instruments
the parser modules as they are imported and drives `TestOneInput` with inputs that reach new
coverage. The first byte of an input picks the seed label (the firmware kind depends on the file
name); the rest is the bytes. With no corpus directory, the target's seeds are written into a
temporary one first. Every input goes through `tools.fuzz_inputs.check` (allowed errors, watchdog,
allocation bound); a `ParserBug` is the crash libFuzzer saves (crash-<sha1> in the working
directory) and `--reproduce FILE` runs one saved input again. Typical flags: `-runs=N`,
`-max_total_time=S`, `-max_len=N`. hypothesis-based fuzzing (`python -m tools.fuzz`) needs none of
this.
"""
from __future__ import annotations

import pathlib
import sys
import tempfile

from hal.errors import BackendUnavailable

# modules whose branches atheris measures for each target
INSTRUMENTED = {
    "firmware": ("drivers.am.firmware",),
    "discovery": ("drivers.am.discovery",),
    "codeobject": ("compute.amd.codeobject", "compute.amd.msgpack"),
    "msgpack": ("compute.amd.msgpack",),
    "ih": ("drivers.am.ih",),
    "pm4": ("mockgpu.amd.mec",),
    "sdma": ("mockgpu.amd.sdma",),
    "rdna3": ("mockgpu.amd.rdna3.decoder",),
}


def one_input(target, labels: list[str], data: bytes) -> None:
    """Check one atheris input: byte 0 picks the label, the rest is the parser's input."""
    from tools import fuzz_inputs

    if not data:
        return
    fuzz_inputs.check(target, labels[data[0] % len(labels)], data[1:])


def write_corpus(target, labels: list[str], directory: pathlib.Path) -> None:
    for index, (label, data) in enumerate(target.seeds()):
        (directory / f"seed-{index}").write_bytes(bytes([labels.index(label)]) + data)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        import atheris
    except ImportError:
        raise SystemExit(str(BackendUnavailable("tools.fuzz_atheris needs atheris: pip install -e "
                                                "'.[atheris]' (CPython 3.11 x86-64 Linux wheel)")))
    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(f"usage: python -m tools.fuzz_atheris TARGET [libFuzzer flags] [CORPUS...]; "
                         f"targets: {', '.join(INSTRUMENTED)}")
    name = argv.pop(1)
    if name not in INSTRUMENTED:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(INSTRUMENTED)}")
    with atheris.instrument_imports():
        import importlib

        for module in INSTRUMENTED[name]:
            importlib.import_module(module)
    from tools import fuzz_inputs

    target = fuzz_inputs.TARGETS[name]
    labels = sorted({label for label, _ in target.seeds()})
    if "--reproduce" in argv:
        path = argv[argv.index("--reproduce") + 1]
        one_input(target, labels, pathlib.Path(path).read_bytes())
        print(f"{path}: no parser bug")
        return 0
    if not any(not item.startswith("-") for item in argv[1:]):
        corpus = pathlib.Path(tempfile.mkdtemp(prefix=f"gpuhal-fuzz-{name}-"))
        write_corpus(target, labels, corpus)
        argv.append(str(corpus))
    atheris.Setup(argv, lambda data: one_input(target, labels, data))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
