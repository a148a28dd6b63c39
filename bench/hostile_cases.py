"""How many hostile or careless inputs the hardening tests throw at each surface
(issue 15), counted from the tests' own tables: `name: value` lines.

    python bench/hostile_cases.py

Hand-written cases are the tables and parametrized cases in tests/test_hardening_*.py
and tests/test_deploy.py; fuzz cases are hypothesis examples per run of tests/test_fuzz.py
(each example is itself a stream of up to 25-40 items)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))


def parametrized(module: str, test: str) -> int:
    """Number of cases in a test's @pytest.mark.parametrize list (read from the source)."""
    tree = ast.parse((TESTS / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == test:
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize":
                    values = dec.args[1]
                    return len(values.elts) if isinstance(values, (ast.List, ast.Tuple)) else 0
    return 0


def fuzz_examples(test: str) -> int:
    import test_fuzz

    fn = getattr(test_fuzz, test)
    settings = getattr(fn, "_hypothesis_internal_use_settings", None)
    return settings.max_examples if settings else 0


def main() -> None:
    import test_hardening_blob as blob_t
    import test_hardening_mqtt as mqtt_t
    import test_hardening_recurrence as rec_t
    import test_hardening_serial as serial_t

    blobs = blob_t.hostile_blobs()
    refused = sum(1 for *_, ok in blobs if not ok)
    surfaces = {
        # every hostile serial line goes through the reader, the monitor and the bridge
        "serial_lines": len(serial_t.HOSTILE) + 2,  # + a 19.7 MB line without newline, a NaN frame
        "mqtt_payloads": len(mqtt_t.HOSTILE) + len(mqtt_t.METRICS) + 1  # + a 1000-byte non-UTF-8 status
                         + 2 + 3,  # 3 MB PUBLISH to a board, the oversize packet stream; outage x2, failing publisher
        "config_files": 1 + parametrized("test_hardening_inputs", "test_config_mistakes_are_one_short_line")
                        + 1 + 2,  # the alias bomb, each mistake, one on the command line, two URLs
        "blobs_refused": refused + 4 + 5 + 1,  # + runner fallbacks, damaged directories, the flash check
        "blob_edges_accepted": len(blobs) - refused,
        "board_layout_and_kernels": 2,  # K > 10 H scratch, an .mpy the firmware cannot load
        "recurrence_binding_calls": 2 * len(rec_t.HOSTILE),  # native and -fsanitize=undefined builds
        "data_model_recording_files": 2 + 1 + 1 + parametrized("test_hardening_inputs",
                                                               "test_quantize_inputs_are_one_line_errors")
                                      + 5 + 1,  # train/quantize overflow, NaN model, divergence; files; NaN t
        "flags_and_signals": 2,  # --realtime on every backend, SIGTERM during flash
        "deploy_programs": 4,  # mosquitto.conf, systemd unit, Home Assistant, Node-RED
        "install": 3,  # wheel contents, clean-venv flash + replay, missing interpreter
    }
    for name, value in surfaces.items():
        print(f"hand_written_{name}: {value}")
    print(f"hand_written_total: {sum(surfaces.values())}")
    fuzz = {"serial_streams": fuzz_examples("test_serial_reader"),
            "mqtt_message_batches": fuzz_examples("test_mqtt_payload_handler"),
            "config_files": fuzz_examples("test_config_loader_hostile") + fuzz_examples("test_config_loader_keeps_valid"),
            "host_blobs": fuzz_examples("test_host_blob_reader"),
            "board_blobs": fuzz_examples("test_board_blob_reader_agrees_with_the_host") * 40}
    for name, value in fuzz.items():
        print(f"fuzz_{name}_per_run: {value}")
    print(f"fuzz_total_per_run: {sum(fuzz.values())}")


if __name__ == "__main__":
    main()
