"""Builds the compiled loops: the integer reference's time loop
(edge_agent/reference/_recurrence.c) and training's forward and backward
through time (edge_agent/learn/_bptt.c).

Everything else about the package is in pyproject.toml. The kernel is compiled
for the machine that installs it (-march=native, where the compiler takes it),
as a JIT would; set EDGE_AGENT_PORTABLE=1 to build for the architecture's
baseline instead (for a wheel that other machines will run). Needs GCC or Clang:
the kernels use their vector extensions.
"""
import os
import shutil
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# fp-contract: fused multiply-adds, exact here (every product and sum is a small integer)
BASE_FLAGS = ["-O3", "-std=c11", "-ffp-contract=fast", "-fno-strict-aliasing"]


def compiler_accepts(compiler, flag: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
        except Exception:  # CompileError, or a compiler that is not there
            return False
    return True


class BuildNative(build_ext):
    def build_extensions(self):
        flags = list(BASE_FLAGS)
        if os.environ.get("EDGE_AGENT_PORTABLE", "") in ("", "0"):
            flags += [f for f in ("-march=native",) if compiler_accepts(self.compiler, f)][:1]
        for ext in self.extensions:
            ext.extra_compile_args = flags
        super().build_extensions()


class BuildWithDevice(build_py):
    """The board's runner (device/*.py) ships inside the package as edge_agent/device/,
    where edge_agent.board.unixport finds it; an editable install uses the checkout's."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "edge_agent" / "device"
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted(Path(__file__).resolve().parent.joinpath("device").glob("*.py")):
            shutil.copyfile(src, dest / src.name)


setup(ext_modules=[Extension("edge_agent.reference._recurrence", ["edge_agent/reference/_recurrence.c"]),
                   Extension("edge_agent.learn._bptt", ["edge_agent/learn/_bptt.c"])],
      cmdclass={"build_ext": BuildNative, "build_py": BuildWithDevice})
